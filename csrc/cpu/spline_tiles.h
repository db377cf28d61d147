// The CPU spline kernels' torch-free interface: one call computes one tile (a run of elements of one sample), as
// the affine tile kernels do (tile_kernels.h); the glue (spline_ops_cpu.cpp) cuts the batch into the same tiles
// and adds the log-det partial sums in the same fixed order. Compiled once per instruction set
// (spline_tiles_impl.h), the variant picked as the affine kernels' is.
#pragma once

#include <cstdint>

#include "../spline_layout.h"
#include "tile_kernels.h"

namespace nf_kernels {
namespace cpu {

struct SplineForwardTensors {
  const void* x;
  DType x_dtype;
  const void* params;
  DType params_dtype;
  void* y;  // x_dtype, shape of x
};

struct SplineBackwardTensors {
  const void* grad_y;       // x_dtype
  const void* grad_logdet;  // [B], the compute type: double if x is float64, else float
  const void* x;
  DType x_dtype;
  const void* params;
  DType params_dtype;
  void* grad_x;       // x_dtype
  void* grad_params;  // params_dtype, shape of params
};

struct SplineTileKernels {
  const char* isa;  // "avx512", "avx2" or "baseline"
  // Writes y[b, start:end) and returns the sum of the log-det terms there.
  double (*forward_tile)(const SplineLayout&, const SplineConfig&, const SplineForwardTensors&, int64_t b,
                         int64_t start, int64_t end);
  // Writes grad_x[b, start:end) and the parameters' gradients of those elements.
  void (*backward_tile)(const SplineLayout&, const SplineConfig&, const SplineBackwardTensors&, int64_t b,
                        int64_t start, int64_t end);
};

// One table per instruction set (spline_tiles_<isa>.cpp); nullptr where this build cannot make that variant.
const SplineTileKernels* avx512_spline_tile_kernels();
const SplineTileKernels* avx2_spline_tile_kernels();
const SplineTileKernels* baseline_spline_tile_kernels();

// The variant of the instruction set the affine kernels use (selected_tile_kernels(), NF_KERNELS_CPU_ISA).
const SplineTileKernels& selected_spline_tile_kernels();

}  // namespace cpu
}  // namespace nf_kernels
