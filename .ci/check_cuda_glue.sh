#!/usr/bin/env bash
# The CUDA kernels' torch glue (csrc/cuda/ops_cuda.cpp, spline_ops_cuda.cpp), syntax only, against torch's c10/cuda
# headers: a CPU build of torch ships them, minus one generated macro header, stubbed here. Needs torch installed.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_INCLUDE="${CUDA_HOME:-/usr/local/cuda}/include"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

TORCH_INCLUDE="$(python3 -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')"
mkdir -p "$WORK/stubs/c10/cuda/impl"
echo '#pragma once' > "$WORK/stubs/c10/cuda/impl/cuda_cmake_macros.h"
for glue in csrc/cuda/ops_cuda.cpp csrc/cuda/spline_ops_cuda.cpp; do
  g++ -std=c++20 -fsyntax-only -Wall -Werror -I"$WORK/stubs" -I"$TORCH_INCLUDE" -I"$CUDA_INCLUDE" "$glue"
  echo "g++: $glue passes a syntax check against torch's CUDA headers"
done
