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

// The elements a kernel computes together (a chunk, staged in L1; spline_tiles_impl.h).
constexpr int kSplineChunkLanes = 64;

// Whether samples go several to a chunk (forward_samples, backward_samples) rather than a tile of one sample at a
// time: when a sample is one tile and its transformable span [lo, hi) at most half a chunk (vector flows of a few
// features: [B, 8] with mask "half" transforms 4 elements a sample, a chunk's vector would be a quarter used).
inline bool packs_samples(const SplineLayout& layout) {
  const int64_t span = layout.select.hi - layout.select.lo;
  return span >= 1 && span <= kSplineChunkLanes / 2 && layout.select.numel <= kTileElements;
}

struct SplineTileKernels {
  const char* isa;  // "avx512", "avx2" or "baseline"
  // Writes y[b, start:end) and returns the sum of the log-det terms there.
  double (*forward_tile)(const SplineLayout&, const SplineConfig&, const SplineForwardTensors&, int64_t b,
                         int64_t start, int64_t end);
  // Writes grad_x[b, start:end) and the parameters' gradients of those elements.
  void (*backward_tile)(const SplineLayout&, const SplineConfig&, const SplineBackwardTensors&, int64_t b,
                        int64_t start, int64_t end);
  // Where packs_samples(layout): writes y of samples [b0, b1) whole and sample b's log-det sum to sums[b - b0]
  // (the same bits as forward_tile over the whole sample).
  void (*forward_samples)(const SplineLayout&, const SplineConfig&, const SplineForwardTensors&, int64_t b0,
                          int64_t b1, double* sums);
  // Where packs_samples(layout): writes grad_x and the parameters' gradients of samples [b0, b1).
  void (*backward_samples)(const SplineLayout&, const SplineConfig&, const SplineBackwardTensors&, int64_t b0,
                           int64_t b1);
};

// One table per instruction set (spline_tiles_<isa>.cpp); nullptr where this build cannot make that variant.
const SplineTileKernels* avx512_spline_tile_kernels();
const SplineTileKernels* avx2_spline_tile_kernels();
const SplineTileKernels* baseline_spline_tile_kernels();

// The variant of the instruction set the affine kernels use (selected_tile_kernels(), NF_KERNELS_CPU_ISA).
const SplineTileKernels& selected_spline_tile_kernels();

}  // namespace cpu
}  // namespace nf_kernels
