#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# Regenerates the pictures and texts of the README's "Start-up tools" section in
# docs/startup/: builds and runs examples/startup_tools.cpp (a recorded 2-thread start-up,
# a preload from its profile, a watchdog report), then renders its dependency graph with
# Graphviz (`dot -Tsvg`; installs the package graphviz when missing and
# IMPORTLOCK_INSTALL_DEPS allows it). The timeline SVGs are drawn by the example itself
# (trace_recorder::write_svg). Run it on a quiet machine: the times are measured.
#   bash tools/startup-docs.sh [OUTPUT_DIR]      (default docs/startup)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=tools/lib/ensure-deps.sh
source tools/lib/ensure-deps.sh
importlock_ensure_deps g++ cmake ninja-build graphviz

out="${1:-docs/startup}"
build_dir=build/startup-docs
cmake -S . -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_COMPILER=g++ \
    -DIMPORTLOCK_BUILD_TESTS=OFF \
    -DIMPORTLOCK_BUILD_EXAMPLES=ON \
    -DIMPORTLOCK_BUILD_BENCHMARKS=OFF \
    -DIMPORTLOCK_INSTALL=OFF >/dev/null
cmake --build "$build_dir" --target startup_tools --parallel 2
mkdir -p "$out"
"$build_dir/examples/startup_tools" "$out" | tee "$out/output.txt"
dot -Tsvg "$out/deps.dot" -o "$out/deps.svg"
echo "startup-docs: wrote $out/deps.svg"
