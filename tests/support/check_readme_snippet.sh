#!/bin/sh
# SPDX-License-Identifier: BSL-1.0
# Extracts the first ```cpp block of README.md and checks that it compiles, links and
# runs (exit 0) as pasted into a file: the README's first snippet must stay a program.
#   sh check_readme_snippet.sh README INCLUDE_DIR OUT_DIR COMPILER [COMPILER ARGS...]
set -u
readme=$1
include_dir=$2
out_dir=$3
shift 3
mkdir -p "$out_dir" || exit 2
source_file="$out_dir/readme_snippet.cpp"
awk '/^```cpp$/ { inside = 1; next } inside && /^```$/ { exit } inside { print }' \
    "$readme" >"$source_file"
if [ ! -s "$source_file" ]; then
    echo "$readme: no \`\`\`cpp block found" >&2
    exit 1
fi
if ! "$@" -std=c++20 -Wall -Wextra -Wpedantic -Werror -I"$include_dir" "$source_file" \
    -pthread -o "$out_dir/readme_snippet"; then
    echo "$readme: the first snippet does not compile as pasted into a file:" >&2
    cat "$source_file" >&2
    exit 1
fi
"$out_dir/readme_snippet" || { echo "$readme: the first snippet exited with $?" >&2; exit 1; }
echo "$readme: the first snippet compiles and runs"
