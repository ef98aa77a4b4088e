#!/bin/sh
# Compiles one tests/compile_fail/*.cpp, which must FAIL to compile with the
# message of its "// expect: " line, and with at most 3 error lines in all (a
# misuse gets one readable diagnostic, not a cascade).
#   sh check.sh SOURCE INCLUDE_DIR COMPILER [COMPILER ARGS...]
set -u
source_file=$1
include_dir=$2
shift 2
expected=$(sed -n 's|^// expect: ||p' "$source_file")
if [ -z "$expected" ]; then
    echo "$source_file: no '// expect: ' line" >&2
    exit 2
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
