#!/usr/bin/env bash
# Configure, build and run the C++ test of the extension against the environment's libtorch (CMakeLists.txt).
# The CUDA kernels are compile-checked by .ci/check_cuda.sh, so this build skips its own copy of that check.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build/cmake}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DNF_KERNELS_CUDA_CHECK=OFF -DPython3_EXECUTABLE="$(command -v python3)"
cmake --build "$BUILD_DIR" -j "$(nproc)"
ctest --test-dir "$BUILD_DIR" --output-on-failure
