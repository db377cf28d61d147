#!/usr/bin/env bash
# Compile the torch-free CUDA kernels (csrc/cuda/coupling_kernels.cu, spline_kernels.cu) without a GPU, so a CUDA
# syntax or template error fails CI: `nvcc -c` for sm_80 and sm_90 with the extension build's flags
# (nf_kernels.benchmarking.gpu_code.NVCC_FLAGS: tests/test_gpu_code.py holds the list below to it), warnings as
# errors. Needs no torch, so CI runs it before the install. The objects go to $NF_KERNELS_TEST_CUDA_OBJECTS when it
# is set: tests/test_gpu_code.py then reads their sm_90 SASS instead of compiling the same kernels again.
# The torch glue's syntax check is .ci/check_cuda_glue.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/bin/nvcc)}"
WORK="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
OUT="${NF_KERNELS_TEST_CUDA_OBJECTS:-$WORK}"
mkdir -p "$OUT"
rm -f "$OUT"/*.o  # never leave an older build's objects for the SASS test

BUILD_FLAGS=(-std=c++17 -O3 --expt-relaxed-constexpr -lineinfo -D__CUDA_NO_HALF_OPERATORS__
             -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__
             -Xcompiler -fPIC)

"$NVCC" --version | tail -1
# The two files compile at once, and each compiles its two archs at once (--threads 2): CI has two cores, and the
# coupling kernels alone took 6.5 of 7 minutes compiled one arch after the other.
kernel_files=(coupling_kernels spline_kernels)
for kernels in "${kernel_files[@]}"; do
  "$NVCC" -c "csrc/cuda/$kernels.cu" -o "$OUT/$kernels.o" "${BUILD_FLAGS[@]}" \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    --threads 2 -Werror all-warnings -Xcompiler -Wall > "$WORK/$kernels.log" 2>&1 &
  pids+=("$!")
done
failed=0
for i in "${!kernel_files[@]}"; do
  kernels=${kernel_files[$i]}
  if wait "${pids[$i]}"; then
    echo "nvcc: csrc/cuda/$kernels.cu compiles for sm_80 and sm_90"
  else
    echo "nvcc: csrc/cuda/$kernels.cu does not compile:"
    failed=1
  fi
  cat "$WORK/$kernels.log"
done
exit "$failed"
