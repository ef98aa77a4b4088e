#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Measures what including importlock costs the compiler: the CPU time (user + sys) of
# `$CXX -std=c++20 -fsyntax-only` (median of RUNS, default 5; the units compiled in
# turn, RUNS rounds) of four small translation units, each including its headers and
# using them once:
#
#   std baseline   <mutex> <unordered_map> <memory> <string> <thread>: a mutex-guarded
#                  map of shared_ptrs, what a user would otherwise write
#   core           <importlock/import_system.hpp>: an import_system, one define, one import
#   umbrella       <importlock/importlock.hpp>: the same use
#   TBB            <tbb/concurrent_hash_map.h>: one insert (only when libtbb-dev is installed)
#   core, extern   the core unit with the system declared `extern template` (the README's
#                  "instantiate once"), and the unit that instantiates it: these two and
#                  the core and baseline units are also compiled to object code (-c, -O0
#                  and -O2), where `extern template` saves the compiler's work
#
# plus two rows that explain the core's cost: the core header alone (no use: the
# difference is template instantiation), and just the standard headers that the core's
# importlock headers include (found from the includes, so it follows the headers as
# they change). It prints each median's ratio to the std baseline, the preprocessed size
# (lines of `-E`, a load-independent proxy), and the targets (core <= 1.5x the baseline;
# umbrella <= TBB). Re-runnable as the headers change: the units use only the public API.
#   bash benchmarks/compile_time.sh            # CXX=g++ RUNS=5
#   CXX=clang++ CXXFLAGS=-stdlib=libc++ RUNS=9 bash benchmarks/compile_time.sh
#   INCLUDE_DIR=/tmp/old/include bash benchmarks/compile_time.sh   # another version's headers
# Exit status: 0, also when a target is missed (it prints MISS); 1 when a unit fails to
# compile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CXX="${CXX:-g++}"
RUNS="${RUNS:-5}"
INCLUDE_DIR="${INCLUDE_DIR:-include}"
read -r -a cxxflags <<<"${CXXFLAGS:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat >"$work/std_baseline.cpp" <<'CPP'
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
struct service { int value = 0; };
std::mutex mutex;
std::unordered_map<std::string, std::shared_ptr<service>> services;
std::shared_ptr<service> get(const std::string& key) {
    std::lock_guard lock(mutex);
    auto& slot = services[key];
    if (!slot) slot = std::make_shared<service>();
    return slot;
}
int main() {
    std::thread t([] { get("a"); });
    t.join();
    return get("a")->value;
}
CPP

use='
struct service { int value = 0; };
int main() {
    importlock::import_system<service> services;
    services.finder().define("a", [](service& s, auto&) { s.value = 1; });
    return services.import_module("a")->value;
}'
printf '#include <importlock/import_system.hpp>\n%s\n' "$use" >"$work/core.cpp"
printf '#include <importlock/import_system.hpp>\nint main() { return 0; }\n' >"$work/core_header.cpp"
# The standard headers included by the importlock headers that the core header reaches.
"$CXX" "${cxxflags[@]}" -std=c++20 -fsyntax-only -H -I"$INCLUDE_DIR" "$work/core_header.cpp" 2>&1 >/dev/null |
    sed -n 's|^\.* \(.*/importlock/.*\.hpp\)$|\1|p' | sort -u |
    { cat; echo "$INCLUDE_DIR/importlock/import_system.hpp"; } |
    xargs grep -h '^#include <' | sed 's|[[:space:]]*//.*||' | sort -u |
    # (guarded: some are conditional in the headers, e.g. <stop_token>)
    sed 's|^#include \(<.*>\)$|#if __has_include(\1)\n#include \1\n#endif|' >"$work/core_std.cpp"
echo 'int main() { return 0; }' >>"$work/core_std.cpp"
printf '#include <importlock/importlock.hpp>\n%s\n' "$use" >"$work/umbrella.cpp"
# "Instantiate once" (README, Compile time): the same use with the system declared
# `extern template`, and the one translation unit that instantiates it.
extern_decl='struct service;
extern template class importlock::basic_import_system<std::string, service>;'
printf '#include <importlock/import_system.hpp>\n%s\n%s\n' "$extern_decl" "$use" >"$work/core_extern.cpp"
printf '#include <importlock/import_system.hpp>\nstruct service { int value = 0; };\n%s\n' \
    'template class importlock::basic_import_system<std::string, service>;' >"$work/core_instantiation.cpp"

tbb_header=""
for h in tbb/concurrent_hash_map.h oneapi/tbb/concurrent_hash_map.h; do
    if echo "#include <$h>" | "$CXX" "${cxxflags[@]}" -std=c++20 -fsyntax-only -x c++ - 2>/dev/null; then
        tbb_header="$h"
        break
    fi
done
if [ -n "$tbb_header" ]; then
    cat >"$work/tbb.cpp" <<CPP
#include <$tbb_header>
#include <string>
int main() {
    tbb::concurrent_hash_map<std::string, int> map;
    tbb::concurrent_hash_map<std::string, int>::accessor slot;
    map.insert(slot, "a");
    slot->second = 1;
    return slot->second;
}
CPP
fi

# The CPU time (user + sys of the compiler), in seconds, of one compile of $1. CPU time
# rather than wall time: the reference machine is shared, and other load stretches wall
# time far more than CPU time. $2... replace -fsyntax-only (e.g. -c -O2 -o /dev/null).
seconds_once() {
    local file="$1" t
    shift
    local mode=("$@")
    [ "${#mode[@]}" -gt 0 ] || mode=(-fsyntax-only)
    t=$({
        TIMEFORMAT='%U %S'
        time "$CXX" "${cxxflags[@]}" -std=c++20 "${mode[@]}" -I"$INCLUDE_DIR" "$file" -pthread
    } 2>&1)
    awk '{ printf "%.3f", $1 + $2 }' <<<"$t"
}

# Fills the associative array named $1 with the median of RUNS compiles of each unit
# named in $2 (a space-separated list; $work/<name>.cpp), in mode $3...: the units are
# compiled in turn, RUNS rounds, so that a change of the machine's load during the
# measurement falls on every unit alike and the ratios stay comparable.
medians_interleaved() {
    local -n out="$1"
    local units="$2" name round
    shift 2
    local mode=("$@")
    declare -A all
    for name in $units; do  # warm the caches; fail early
        [ "${#mode[@]}" -gt 0 ] || "$CXX" "${cxxflags[@]}" -std=c++20 -fsyntax-only \
            -I"$INCLUDE_DIR" "$work/$name.cpp" -pthread
        [ "${#mode[@]}" -eq 0 ] || "$CXX" "${cxxflags[@]}" -std=c++20 "${mode[@]}" \
            -I"$INCLUDE_DIR" "$work/$name.cpp" -pthread
    done
    for ((round = 0; round < RUNS; round++)); do
        for name in $units; do all[$name]+="$(seconds_once "$work/$name.cpp" "${mode[@]}") "; done
    done
    for name in $units; do
        out[$name]=$(tr ' ' '\n' <<<"${all[$name]}" | sed '/^$/d' | sort -n |
            sed -n "$(((RUNS + 1) / 2))p")
    done
}

names=(std_baseline core_std core_header core umbrella)
labels=("std baseline (<mutex> <unordered_map> <memory> <string> <thread>)"
    "  the std headers the core's headers include ($(grep -c '^#include' "$work/core_std.cpp"), no use)"
    "  core header alone, no use"
    "core: <importlock/import_system.hpp> + one use"
    "umbrella: <importlock/importlock.hpp> + one use")
if [ -n "$tbb_header" ]; then
    names+=(tbb)
    labels+=("TBB: <$tbb_header> + one use")
fi

declare -A secs lines
medians_interleaved secs "${names[*]}"
for name in "${names[@]}"; do
    lines[$name]="$("$CXX" "${cxxflags[@]}" -std=c++20 -E -I"$INCLUDE_DIR" "$work/$name.cpp" | wc -l)"
done

echo "compile time: $("$CXX" --version | head -1) ${CXXFLAGS:-}, -std=c++20 -fsyntax-only," \
    "CPU s, median of $RUNS (the units in turn); headers: $INCLUDE_DIR"
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '| %-66s | %8s | %12s | %10s |\n' "translation unit" "CPU s" "vs baseline" "-E lines"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..68})" "----------" "--------------" \
    "------------"
for i in "${!names[@]}"; do
    name="${names[$i]}"
    ratio=$(awk -v a="${secs[$name]}" -v b="${secs[std_baseline]}" 'BEGIN { printf "%.2fx", a / b }')
    printf '| %-66s | %8s | %12s | %10s |\n' "${labels[$i]}" "${secs[$name]}" "$ratio" \
        "${lines[$name]}"
done
echo
# Object code: where `extern template` saves the compiler's work (-fsyntax-only still
# instantiates what a translation unit uses; code generation is what is skipped).
obj_names=(std_baseline core core_extern core_instantiation)
obj_labels=("std baseline" "core + one use" "core + one use, the system declared extern template"
    "  the one translation unit that instantiates it (once per program)")
for level in -O0 -O2; do
    declare -A obj
    medians_interleaved obj "${obj_names[*]}" -c "$level" -o /dev/null
    printf '| %-66s | %8s | %12s |\n' "object code (-c $level)" "CPU s" "vs baseline"
    printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..68})" "----------" "--------------"
    for i in "${!obj_names[@]}"; do
        name="${obj_names[$i]}"
        ratio=$(awk -v a="${obj[$name]}" -v b="${obj[std_baseline]}" 'BEGIN { printf "%.2fx", a / b }')
        printf '| %-66s | %8s | %12s |\n' "${obj_labels[$i]}" "${obj[$name]}" "$ratio"
    done
    echo
    unset obj
done
core_ratio=$(awk -v a="${secs[core]}" -v b="${secs[std_baseline]}" 'BEGIN { printf "%.2f", a / b }')
if awk -v r="$core_ratio" 'BEGIN { exit !(r <= 1.5) }'; then verdict=ok; else verdict=MISS; fi
echo "target core <= 1.5x baseline: ${core_ratio}x  $verdict"
if [ -n "$tbb_header" ]; then
    if awk -v a="${secs[umbrella]}" -v b="${secs[tbb]}" 'BEGIN { exit !(a <= b) }'; then
        verdict=ok
    else
        verdict=MISS
    fi
    echo "target umbrella <= TBB: ${secs[umbrella]} s vs ${secs[tbb]} s  $verdict"
else
    echo "target umbrella <= TBB: not measured (install libtbb-dev)"
fi
