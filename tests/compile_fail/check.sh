#!/bin/sh
# SPDX-License-Identifier: BSL-1.0
# Compiles one tests/compile_fail/*.cpp, which must FAIL to compile with the
# message of its "// expect: " line, and with at most 3 error lines in all (a
# misuse gets one readable diagnostic, not a cascade). A positive control says
# "// expect: <compiles>" instead: it must compile, warning-free
# (-Wall -Wextra -Wpedantic -Werror), so that its broken twin fails for one reason.
#   sh check.sh SOURCE INCLUDE_DIR COMPILER [COMPILER ARGS...]
# COMPILER ARGS are the build's flags (e.g. -stdlib=libc++), so that the case sees the
# same standard library as the build.
set -u
source_file=$1
include_dir=$2
shift 2
expected=$(sed -n 's|^// expect: ||p' "$source_file")
if [ -z "$expected" ]; then
    echo "$source_file: no '// expect: ' line" >&2
    exit 2
fi
if [ "$expected" = "<compiles>" ]; then
    if ! log=$("$@" -std=c++20 -fsyntax-only -Wall -Wextra -Wpedantic -Werror \
        -I"$include_dir" "$source_file" 2>&1); then
        printf '%s: a positive control, it must compile; it did not:\n%s\n' "$source_file" \
            "$log" >&2
        exit 1
    fi
    echo "$source_file: compiles, as its positive control must"
    exit 0
fi
log=$("$@" -std=c++20 -fsyntax-only -I"$include_dir" "$source_file" 2>&1)
if [ $? -eq 0 ]; then
    echo "$source_file: compiled, but it must not" >&2
    exit 1
fi
if ! printf '%s\n' "$log" | grep -qF -- "$expected"; then
    printf '%s: the diagnostic lacks "%s"; it was:\n%s\n' "$source_file" "$expected" "$log" >&2
    exit 1
fi
errors=$(printf '%s\n' "$log" | grep -c 'error:')
if [ "$errors" -gt 3 ]; then
    printf '%s: %s error lines, expected one readable message:\n%s\n' "$source_file" "$errors" "$log" >&2
    exit 1
fi
echo "$source_file: fails as expected ($errors error line(s)): $expected"
