#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Formats the C++ sources in place with the clang-format that tools/test.sh checks with.
#   bash tools/format.sh            # include/ tests/ examples/ benchmarks/
#   bash tools/format.sh FILE...    # just these
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=tools/lib/ensure-deps.sh
source tools/lib/ensure-deps.sh
importlock_ensure_deps "$IMPORTLOCK_CLANG_FORMAT_PKG"

files=("$@")
if [ "${#files[@]}" -eq 0 ]; then
    mapfile -d '' files < <(importlock_cpp_sources)
fi
if [ "${#files[@]}" -gt 0 ]; then
    "$IMPORTLOCK_CLANG_FORMAT" -i "${files[@]}"
fi
echo "formatted ${#files[@]} files with $("$IMPORTLOCK_CLANG_FORMAT" --version)"
