#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Runs every test: bash tools/test.sh [STAGE...]
#
# Stages (default, in this order: gcc tsan asan libcxx bench fuzz consumers format; "all"
# adds clang and meson, whose compilers and build system the default stages already cover):
#   gcc      CMake preset gcc:   build (-Werror, each header alone) + ctest
#   tsan     CMake preset tsan:  clang ThreadSanitizer build (-Werror) + ctest
#   asan     CMake preset asan:  clang AddressSanitizer + UBSan build (-Werror) + ctest
#            (tsan and asan skip the tests that only run the compiler: compile_fail_*,
#            readme_snippet, startup_trace_json; gcc and libcxx run them)
#   libcxx   Meson, clang++ -stdlib=libc++: build (-Werror, each header alone) + meson test
#            (installs libc++-14-dev libc++abi-14-dev when missing)
#   clang    CMake preset clang: build (-Werror) + ctest
#   meson    Meson with the default compiler (g++): build (-Werror) + meson test
#   bench    CMake preset release: build the benchmarks (-O2) with their peers (installs
#            libtbb-dev libabsl-dev libcuckoo-dev when missing), run importlock_bench --quick,
#            preload_bench --quick and file_cache_bench --quick
#   fuzz     libFuzzer target (clang, ASan+UBSan), run for FUZZ_SECONDS (default 30)
#   consumers  a consumer program built through: install + find_package, the build tree's
#            export (importlock_DIR), add_subdirectory, FetchContent (local git), a Meson
#            subproject, and pkg-config (compiled, linked and run)
#   format   clang-format-19 --dry-run --Werror over include/ tests/ examples/ benchmarks/
#            (fix with: bash tools/format.sh); the SPDX licence line in every tracked
#            source, build and script file (fix with: bash tools/spdx.sh); every source
#            listed in the Meson files (tools/check-meson-lists.sh)
#
# Each stage is timed and reported as one PASS/FAIL line; a failing stage does not stop the
# others. The exit status is non-zero when any stage failed, and the last line is
# "N passed, N failed" (counting stages).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEFAULT_STAGES=(gcc tsan asan libcxx bench fuzz consumers format)
ALL_STAGES=(gcc clang tsan asan libcxx meson bench fuzz consumers format)
JOBS="${JOBS:-2}"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; /SPDX-License-Identifier/d; s/^# \{0,1\}//'
}

# --- Which stages ---------------------------------------------------------------------------
stages=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        all) stages+=("${ALL_STAGES[@]}") ;;
        gcc | clang | libcxx | tsan | asan | meson | fuzz | consumers | format) stages+=("$arg") ;;
        bench | benchmarks | release) stages+=(bench) ;;
        clang-format) stages+=(format) ;;
        *) echo "test.sh: unknown stage '$arg' (stages: ${ALL_STAGES[*]})" >&2; exit 2 ;;
    esac
done
if [ "${#stages[@]}" -eq 0 ]; then
    stages=("${DEFAULT_STAGES[@]}")
fi

# shellcheck source=tools/lib/ensure-deps.sh
source tools/lib/ensure-deps.sh
importlock_ensure_deps

# --- Stages -----------------------------------------------------------------------------------
# Each runs in a subshell with errexit on: the first failing command fails the stage.

cmake_preset_stage() {
    local preset="$1"
    cmake --preset "$preset"
    cmake --build --preset "$preset" --parallel "$JOBS"
    ctest --preset "$preset" -j "$JOBS"
}

stage_gcc() { cmake_preset_stage gcc; }
stage_clang() { cmake_preset_stage clang; }

# libc++ of the clang++ on PATH (clang 14 on Debian 12). Catch2 v2 is header-only, and the
# project compiles its main itself (tests/support/catch_main.cpp), so Debian's catch2 works
# with libc++ too.
stage_libcxx() {
    local clang_major
    clang_major="$(clang++ -dumpversion | cut -d. -f1)"
    importlock_ensure_deps "libc++-${clang_major}-dev" "libc++abi-${clang_major}-dev"
    # Meson with clang++ and libc++: checks the Meson build and macOS's standard library
    # in one build (CMake users: the libcxx preset does the same with CMake).
    local dir=build/libcxx-meson
    rm -rf "$dir"
    # -Ddebug=false: no debug information (-O0 as in a debug build, asserts on): the
    # stage checks that everything builds and passes, and it compiles 10% faster.
    CXX=clang++ CXXFLAGS="-stdlib=libc++" LDFLAGS="-stdlib=libc++" \
        meson setup "$dir" -Dwerror=true -Dcheck_headers=true -Ddebug=false
    meson compile -C "$dir" -j "$JOBS"
    meson test -C "$dir" --print-errorlogs --num-processes "$JOBS"
}

stage_tsan() {
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
    cmake --preset tsan
    cmake --build --preset tsan --parallel "$JOBS"
    # TSan of clang 14 cannot map its shadow memory with more than 28 bits of mmap
    # randomisation (newer kernels default to 32): run the tests without ASLR then.
    local wrap=()
    local rnd_bits
    rnd_bits="$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)"
    if [ "$rnd_bits" -gt 28 ] && setarch "$(uname -m)" -R true 2>/dev/null; then
        echo "tsan: vm.mmap_rnd_bits=$rnd_bits, running ctest under setarch -R"
        wrap=(setarch "$(uname -m)" -R)
    fi
    "${wrap[@]}" ctest --preset tsan -j "$JOBS"
}

stage_asan() {
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    cmake_preset_stage asan
}

stage_meson() {
    local dir=build/meson
    if [ -f "$dir/meson-private/coredata.dat" ]; then
        meson setup --wipe "$dir" -Dwerror=true -Dcheck_headers=true
    else
        rm -rf "$dir"
        meson setup "$dir" -Dwerror=true -Dcheck_headers=true
    fi
    meson compile -C "$dir" -j "$JOBS"
    meson test -C "$dir" --print-errorlogs --num-processes "$JOBS"
}

have_benchmarks() {
    compgen -G "benchmarks/*.cpp" >/dev/null
}

# The benchmark's third-party peers (each left out when its package is missing), then one
# --quick run of each benchmark as a smoke test: it fails only when an invariant breaks (a
# MISS does not).
stage_bench() {
    importlock_ensure_deps libtbb-dev libabsl-dev libcuckoo-dev
    cmake --preset release
    cmake --build --preset benchmarks --parallel "$JOBS"
    build/release/benchmarks/importlock_bench --quick
    build/release/benchmarks/preload_bench --quick
    build/release/benchmarks/file_cache_bench --quick
}

stage_fuzz() {
    local dir=build/fuzz
    mkdir -p "$dir/corpus"
    clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        -Wall -Wextra -Werror -Iinclude tests/fuzz/fuzz_import_system.cpp -o "$dir/fuzz_import_system"
    "$dir/fuzz_import_system" -max_total_time="${FUZZ_SECONDS:-30}" -print_final_stats=1 \
        "$dir/corpus"
}

stage_consumers() {
    local dir
    dir="$(pwd)/build/consumers"
    rm -rf "$dir"
    mkdir -p "$dir"
    # 1. Installed, found with find_package (version file checked), from DATADIR.
    cmake -S . -B "$dir/lib" -G Ninja -DCMAKE_INSTALL_PREFIX="$dir/prefix"
    cmake --install "$dir/lib"
    test -f "$dir/prefix/share/cmake/importlock/importlockConfig.cmake"
    test -f "$dir/prefix/share/pkgconfig/importlock.pc"
    cmake -S tests/consumers/cmake -B "$dir/find_package" -G Ninja \
        -DIMPORTLOCK_ROUTE=find_package -DCMAKE_PREFIX_PATH="$dir/prefix" \
        -DIMPORTLOCK_EXPECT_DIR="$dir/prefix/share/cmake/importlock"
    cmake --build "$dir/find_package"
    "$dir/find_package/consumer"
    # 2. The build tree's export: importlock_DIR is the (uninstalled) build directory.
    cmake -S tests/consumers/cmake -B "$dir/build_tree" -G Ninja \
        -DIMPORTLOCK_ROUTE=find_package -Dimportlock_DIR="$dir/lib" \
        -DIMPORTLOCK_EXPECT_DIR="$dir/lib"
    cmake --build "$dir/build_tree"
    "$dir/build_tree/consumer"
    # 3. add_subdirectory: no tests, examples or warnings leak.
    cmake -S tests/consumers/cmake -B "$dir/subdirectory" -G Ninja \
        -DIMPORTLOCK_ROUTE=subdirectory -DIMPORTLOCK_SOURCE_DIR="$(pwd)"
    cmake --build "$dir/subdirectory"
    "$dir/subdirectory/consumer"
    # 4. FetchContent from this repository's git history (local, no network). It fetches
    #    the committed HEAD: uncommitted changes are not part of this route.
    if ! git diff --quiet HEAD -- 2>/dev/null; then
        echo "consumers: note: the tree has uncommitted changes; FetchContent uses HEAD"
    fi
    cmake -S tests/consumers/cmake -B "$dir/fetchcontent" -G Ninja \
        -DIMPORTLOCK_ROUTE=fetchcontent -DIMPORTLOCK_GIT_REPOSITORY="$(pwd)" \
        -DIMPORTLOCK_GIT_TAG="$(git rev-parse HEAD)"
    cmake --build "$dir/fetchcontent"
    "$dir/fetchcontent/consumer"
    # 5. A Meson subproject.
    mkdir -p "$dir/meson_src/subprojects"
    cp tests/consumers/meson/meson.build "$dir/meson_src/"
    cp tests/consumers/consumer.cpp "$dir/"
    ln -s "$(pwd)" "$dir/meson_src/subprojects/importlock"
    meson setup "$dir/meson" "$dir/meson_src"
    meson test -C "$dir/meson" --print-errorlogs
    # 6. pkg-config from the CMake install: a program compiled and linked with its flags.
    local pc_flags
    pc_flags="$(PKG_CONFIG_PATH="$dir/prefix/share/pkgconfig" pkg-config --cflags --libs importlock)"
    echo "consumers: pkg-config --cflags --libs importlock: $pc_flags"
    # shellcheck disable=SC2086 # the flags are words
    g++ -std=c++20 tests/consumers/consumer.cpp $pc_flags -o "$dir/pkg_config_consumer"
    "$dir/pkg_config_consumer"
}

stage_format() {
    local rc=0
    # Every tracked source, build and script file starts with the SPDX licence line.
    bash tools/spdx.sh --check || rc=1
    # Every tests/, examples/, benchmarks/ source and public header is in the Meson lists.
    bash tools/check-meson-lists.sh || rc=1
    local files=()
    mapfile -d '' files < <(importlock_cpp_sources)
    echo "format: checking ${#files[@]} files with $("$IMPORTLOCK_CLANG_FORMAT" --version)"
    if [ "${#files[@]}" -gt 0 ] &&
        ! "$IMPORTLOCK_CLANG_FORMAT" --dry-run --Werror "${files[@]}"; then
        echo "format: to fix, run: bash tools/format.sh"
        return 1
    fi
    return "$rc"
}

# --- Run ------------------------------------------------------------------------------------
results=()
passed=0
failed=0
for stage in "${stages[@]}"; do
    if [ "$stage" = bench ] && ! have_benchmarks; then
        echo "SKIP  bench (no benchmarks/*.cpp)"
        results+=("SKIP  bench (no benchmarks/*.cpp; not counted)")
        continue
    fi
    echo
    echo "=== stage $stage ==="
    start=$(date +%s)
    set +e
    (
        set -euo pipefail
        "stage_$stage"
    )
    rc=$?
    set -e
    elapsed=$(($(date +%s) - start))
    if [ "$rc" -eq 0 ]; then
        line="PASS  $stage (${elapsed}s)"
        passed=$((passed + 1))
    else
        line="FAIL  $stage (${elapsed}s, exit $rc)"
        failed=$((failed + 1))
    fi
    echo "$line"
    results+=("$line")
done

echo
echo "=== summary ==="
printf '%s\n' "${results[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
