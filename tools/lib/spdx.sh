# SPDX-License-Identifier: BSL-1.0
# shellcheck shell=bash
# Sourced by tools/spdx.sh and tools/test.sh (format stage): which files carry the SPDX
# licence line, what it looks like, and how to test and add it.

IMPORTLOCK_SPDX_ID="SPDX-License-Identifier: BSL-1.0"

# Prints the tracked files that need the line, NUL-separated: C++ sources and headers,
# shell scripts, CMake and Meson files, and the configured templates.
importlock_spdx_files() {
    git ls-files -z -- '*.hpp' '*.cpp' '*.cpp.in' '*.sh' '*CMakeLists.txt' '*meson.build' \
        'meson_options.txt' '*.cmake.in' '*.pc.in' '.ci/run'
}

# Prints the line `file` needs: "// ..." for C++, "# ..." for everything else.
importlock_spdx_line() {
    case "$1" in
        *.hpp | *.cpp | *.cpp.in) echo "// $IMPORTLOCK_SPDX_ID" ;;
        *) echo "# $IMPORTLOCK_SPDX_ID" ;;
    esac
}

# Succeeds when `file`'s first line (its second, after a "#!" line) is the SPDX line.
importlock_spdx_has_line() {
    local file="$1" want first
    want="$(importlock_spdx_line "$file")"
    first="$(head -n 1 "$file")"
    if [[ "$first" == '#!'* ]]; then
        first="$(sed -n 2p "$file")"
    fi
    [ "$first" = "$want" ]
}

# Inserts the SPDX line first (after a "#!" line) into `file`, keeping its mode. Writes a
# new file and renames it over the old one: a running script (tools/spdx.sh itself) keeps
# reading its old inode instead of seeing its text shift under it.
importlock_spdx_add_line() {
    local file="$1" want tmp
    want="$(importlock_spdx_line "$file")"
    tmp="$(mktemp "$file.spdx.XXXXXX")"
    if [[ "$(head -n 1 "$file")" == '#!'* ]]; then
        { head -n 1 "$file"; echo "$want"; tail -n +2 "$file"; } >"$tmp"
    else
        { echo "$want"; cat "$file"; } >"$tmp"
    fi
    chmod --reference="$file" "$tmp"
    mv -f "$tmp" "$file"
}
