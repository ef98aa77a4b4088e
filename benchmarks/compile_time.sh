#!/usr/bin/env bash
# Measures what including importlock costs the compiler: the CPU time (user + sys) of
# `$CXX -std=c++20 -fsyntax-only` (median of RUNS, default 5) of four small translation
# units, each including its headers and using them once:
#
#   std baseline   <mutex> <unordered_map> <memory> <string> <thread>: a mutex-guarded
#                  map of shared_ptrs, what a user would otherwise write
#   core           <importlock/import_system.hpp>: an import_system, one define, one import
#   umbrella       <importlock/importlock.hpp>: the same use
#   TBB            <tbb/concurrent_hash_map.h>: one insert (only when libtbb-dev is installed)
#
# and prints a table with each median's ratio to the std baseline, and the targets
# (core <= 1.5x the baseline; umbrella <= TBB). Re-runnable as the headers change: the
# translation units use only the public API.
#   bash benchmarks/compile_time.sh            # CXX=g++ RUNS=5
#   CXX=clang++ RUNS=9 bash benchmarks/compile_time.sh
# Exit status: 0, also when a target is missed (it prints MISS); 1 when a unit fails to
# compile.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CXX="${CXX:-g++}"
RUNS="${RUNS:-5}"
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
printf '#include <importlock/importlock.hpp>\n%s\n' "$use" >"$work/umbrella.cpp"

tbb_header=""
for h in tbb/concurrent_hash_map.h oneapi/tbb/concurrent_hash_map.h; do
    if echo "#include <$h>" | "$CXX" -std=c++20 -fsyntax-only -x c++ - 2>/dev/null; then
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

# Prints the median CPU time (user + sys of the compiler), in seconds, of compiling $1
# RUNS times. CPU time rather than wall time: the reference machine is shared, and other
# load stretches wall time far more than CPU time.
median_seconds() {
    local file="$1" i t times=()
    "$CXX" -std=c++20 -fsyntax-only -Iinclude "$file" -pthread  # warm the caches; fail early
    for ((i = 0; i < RUNS; i++)); do
        t=$({
            TIMEFORMAT='%U %S'
            time "$CXX" -std=c++20 -fsyntax-only -Iinclude "$file" -pthread
        } 2>&1)
        times+=("$(awk '{ printf "%.3f", $1 + $2 }' <<<"$t")")
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p"
}

names=(std_baseline core umbrella)
labels=("std baseline (<mutex> <unordered_map> <memory> <string> <thread>)"
    "core: <importlock/import_system.hpp> + one use"
    "umbrella: <importlock/importlock.hpp> + one use")
if [ -n "$tbb_header" ]; then
    names+=(tbb)
    labels+=("TBB: <$tbb_header> + one use")
fi

declare -A secs
for name in "${names[@]}"; do
    secs[$name]="$(median_seconds "$work/$name.cpp")"
done

echo "compile time: $("$CXX" --version | head -1), -std=c++20 -fsyntax-only, CPU s, median of $RUNS"
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '| %-66s | %8s | %12s |\n' "translation unit" "seconds" "vs baseline"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..68})" "----------" "--------------"
for i in "${!names[@]}"; do
    name="${names[$i]}"
    ratio=$(awk -v a="${secs[$name]}" -v b="${secs[std_baseline]}" 'BEGIN { printf "%.2fx", a / b }')
    printf '| %-66s | %8s | %12s |\n' "${labels[$i]}" "${secs[$name]}" "$ratio"
done
echo
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
