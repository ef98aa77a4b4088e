# SPDX-License-Identifier: BSL-1.0
# shellcheck shell=bash
# Sourced by tools/test.sh, tools/demo.sh and tools/format.sh: installs the Debian 12
# packages the build needs, and only when one is missing (no apt run on a machine that
# has them all).
#
#   importlock_ensure_deps            # everything tools/test.sh needs
#   importlock_ensure_deps g++ cmake  # just these
#
# IMPORTLOCK_INSTALL_DEPS says whether missing packages are installed:
#   1  install them with apt-get (through sudo when not root)
#   0  never install; list what is missing (the stages that need it then fail)
# Unset, it is 1 when running as root or when CI=true (CI runs as root on a fresh
# Debian 12 and must set itself up), and 0 otherwise: a developer's machine is not
# changed behind their back.

# The formatter is pinned: Debian 12's default clang-format (14) mangles C++20
# requires-clauses, bookworm's clang-format-19 does not. CLANG_FORMAT=... overrides the
# binary (then no package is installed for it).
IMPORTLOCK_CLANG_FORMAT_PKG=clang-format-19
if [ -n "${CLANG_FORMAT:-}" ]; then
    IMPORTLOCK_CLANG_FORMAT="$CLANG_FORMAT"
    IMPORTLOCK_CLANG_FORMAT_PKG=""
else
    IMPORTLOCK_CLANG_FORMAT=clang-format-19
fi

IMPORTLOCK_ALL_DEPS=(g++ clang cmake ninja-build catch2 meson pkg-config)
if [ -n "$IMPORTLOCK_CLANG_FORMAT_PKG" ]; then
    IMPORTLOCK_ALL_DEPS+=("$IMPORTLOCK_CLANG_FORMAT_PKG")
fi

# Prints the C++ sources that are formatted and checked, NUL-separated and sorted.
importlock_cpp_sources() {
    local dir
    for dir in include tests examples benchmarks; do
        [ -d "$dir" ] || continue
        find "$dir" -type f \( -name '*.cpp' -o -name '*.hpp' \) -print0
    done | LC_ALL=C sort -z
}

importlock_pkg_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

importlock_ensure_deps() {
    local wanted=("$@")
    if [ "${#wanted[@]}" -eq 0 ]; then
        wanted=("${IMPORTLOCK_ALL_DEPS[@]}")
        # The sanitizer runtimes are only a Recommends of clang, so --no-install-recommends
        # leaves them out: ask for them by name (clang 14 on Debian 12).
        local clang_major=14
        if command -v clang++ >/dev/null 2>&1; then
            clang_major="$(clang++ -dumpversion | cut -d. -f1)"
        fi
        wanted+=("libclang-rt-${clang_major}-dev")
    fi

    if ! command -v dpkg >/dev/null 2>&1; then
        echo "ensure-deps: no dpkg here; install ${wanted[*]} by hand" >&2
        return 0
    fi

    local missing=() pkg
    for pkg in "${wanted[@]}"; do
        [ -n "$pkg" ] || continue
        importlock_pkg_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi

    local install="${IMPORTLOCK_INSTALL_DEPS:-}"
    if [ -z "$install" ]; then
        if [ "$(id -u)" -eq 0 ] || [ "${CI:-}" = true ]; then
            install=1
        else
            install=0
        fi
    fi
    if [ "$install" != 1 ]; then
        echo "ensure-deps: missing ${missing[*]}; not installing them" \
            "(IMPORTLOCK_INSTALL_DEPS=$install). Install them with" \
            "'apt-get install ${missing[*]}' or rerun with IMPORTLOCK_INSTALL_DEPS=1." >&2
        return 0
    fi

    echo "ensure-deps: installing ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "ensure-deps: not root and no sudo; install ${missing[*]} by hand" >&2
            return 1
        fi
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
}
