#!/usr/bin/env bash
# SPDX-License-Identifier: BSL-1.0
# The demo: builds and runs examples/threaded_import.cpp.   Usage: bash tools/demo.sh [args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=tools/lib/ensure-deps.sh
source tools/lib/ensure-deps.sh
# The demo needs only a compiler, CMake and Ninja (no Catch2, clang or Meson).
importlock_ensure_deps g++ cmake ninja-build

build_dir=build/demo
cmake -S . -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_COMPILER=g++ \
    -DIMPORTLOCK_BUILD_TESTS=OFF \
    -DIMPORTLOCK_BUILD_EXAMPLES=ON \
    -DIMPORTLOCK_BUILD_BENCHMARKS=OFF \
    -DIMPORTLOCK_INSTALL=OFF
cmake --build "$build_dir" --target threaded_import --parallel 2
echo "--- running $build_dir/examples/threaded_import"
exec "$build_dir/examples/threaded_import" "$@"
