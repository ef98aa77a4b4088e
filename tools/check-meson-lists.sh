#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Checks that the Meson files list every source on disk (Meson has no glob): each
# tests/*.cpp and tests/compile_fail/*.cpp in tests/meson.build, each examples/*.cpp in
# examples/meson.build, each benchmarks/*.cpp in benchmarks/meson.build, and each
# include/importlock/**/*.hpp in meson.build's importlock_headers. Also fails on a listed
# file that no longer exists. Run by the format stage of tools/test.sh.
#   bash tools/check-meson-lists.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

status=0

# check MESON_FILE PREFIX FILE...: each FILE (relative to PREFIX) is quoted in MESON_FILE.
check() {
    local meson_file="$1" prefix="$2" file entry
    shift 2
    for file in "$@"; do
        entry="${file#"$prefix"}"
        if ! grep -qF "'$entry'" "$meson_file"; then
            echo "check-meson-lists: $file is not listed in $meson_file" >&2
            status=1
        fi
    done
    # Listed entries that are gone (the lines "  'name.cpp'," / "  'importlock/x.hpp',").
    while IFS= read -r entry; do
        if [ ! -f "$prefix$entry" ]; then
            echo "check-meson-lists: $meson_file lists '$entry', which does not exist" >&2
            status=1
        fi
    done < <(sed -n "s/^  '\([^']*\.[ch]pp\)',\$/\1/p" "$meson_file")
}

shopt -s nullglob
check examples/meson.build examples/ examples/*.cpp
check benchmarks/meson.build benchmarks/ benchmarks/*.cpp
mapfile -t headers < <(find include/importlock -name '*.hpp' | LC_ALL=C sort)
check meson.build include/ "${headers[@]}"

# tests/meson.build has two lists: top-level tests and compile_fail cases.
for file in tests/*.cpp; do
    grep -qF "'${file#tests/}'" tests/meson.build ||
        { echo "check-meson-lists: $file is not listed in tests/meson.build" >&2; status=1; }
done
for file in tests/compile_fail/*.cpp; do
    grep -qF "'${file#tests/compile_fail/}'" tests/meson.build ||
        { echo "check-meson-lists: $file is not listed in tests/meson.build" >&2; status=1; }
done
while IFS= read -r entry; do
    if [ ! -f "tests/$entry" ] && [ ! -f "tests/compile_fail/$entry" ]; then
        echo "check-meson-lists: tests/meson.build lists '$entry', which does not exist" >&2
        status=1
    fi
done < <(sed -n "s/^  '\([^']*\.cpp\)',\$/\1/p" tests/meson.build)

if [ "$status" -eq 0 ]; then
    echo "check-meson-lists: every source is listed in the Meson files"
fi
exit "$status"
