#!/usr/bin/env bash
# Compile the CUDA kernels without a GPU, so a CUDA syntax or template error fails CI:
#   1. the torch-free kernels (csrc/cuda/coupling_kernels.cu, spline_kernels.cu) with `nvcc -c` for sm_80 and
#      sm_90, warnings as errors;
#   2. the torch glue (csrc/cuda/ops_cuda.cpp, spline_ops_cuda.cpp), syntax only, against torch's c10/cuda headers
#      (a CPU build of torch ships them, minus one generated macro header, stubbed here).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/bin/nvcc)}"
CUDA_INCLUDE="${CUDA_HOME:-/usr/local/cuda}/include"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$NVCC" --version | tail -1
time "$NVCC" -c csrc/cuda/coupling_kernels.cu -o "$WORK/coupling_kernels.o" -std=c++17 -O3 \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -Werror all-warnings -Xcompiler -Wall
echo "nvcc: csrc/cuda/coupling_kernels.cu compiles for sm_80 and sm_90"
time "$NVCC" -c csrc/cuda/spline_kernels.cu -o "$WORK/spline_kernels.o" -std=c++17 -O3 \
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -Werror all-warnings -Xcompiler -Wall
echo "nvcc: csrc/cuda/spline_kernels.cu compiles for sm_80 and sm_90"

TORCH_INCLUDE="$(python3 -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')"
mkdir -p "$WORK/stubs/c10/cuda/impl"
echo '#pragma once' > "$WORK/stubs/c10/cuda/impl/cuda_cmake_macros.h"
for glue in csrc/cuda/ops_cuda.cpp csrc/cuda/spline_ops_cuda.cpp; do
  g++ -std=c++20 -fsyntax-only -Wall -Werror -I"$WORK/stubs" -I"$TORCH_INCLUDE" -I"$CUDA_INCLUDE" "$glue"
  echo "g++: $glue passes a syntax check against torch's CUDA headers"
done
