#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Adds the licence line `SPDX-License-Identifier: BSL-1.0` to every tracked source, build
# and script file that lacks it, as its first line ("// ..." in C++, "# ..." elsewhere;
# after the "#!" line of a script, which must stay first). Re-run it after adding or
# merging files; the format stage of tools/test.sh fails while a file lacks the line.
#   bash tools/spdx.sh           # add the missing lines
#   bash tools/spdx.sh --check   # only list the files that lack it (exit 1 if any)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=tools/lib/spdx.sh
source tools/lib/spdx.sh

mode=add
case "${1:-}" in
    --check) mode=check ;;
    "") ;;
    *) echo "usage: bash tools/spdx.sh [--check]" >&2; exit 2 ;;
esac

missing=0
added=0
while IFS= read -r -d '' file; do
    importlock_spdx_has_line "$file" && continue
    if [ "$mode" = check ]; then
        echo "spdx: $file lacks '$(importlock_spdx_line "$file")' as its first line" >&2
        missing=$((missing + 1))
    else
        importlock_spdx_add_line "$file"
        echo "spdx: added to $file"
        added=$((added + 1))
    fi
done < <(importlock_spdx_files)

if [ "$mode" = check ]; then
    if [ "$missing" -gt 0 ]; then
        echo "spdx: $missing file(s) lack the licence line; to fix, run: bash tools/spdx.sh" >&2
        exit 1
    fi
    echo "spdx: every source, build and script file has the licence line"
else
    echo "spdx: added the licence line to $added file(s)"
fi
