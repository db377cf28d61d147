// The CPU spline kernels' torch-free interface: one call computes one tile (a run of elements of one sample), as
// the affine tile kernels do (tile_kernels.h); the glue (spline_ops_cpu.cpp) cuts the batch into the same tiles
// and adds the log-det partial sums in the same fixed order.
#pragma once

#include <cstdint>

#include "../spline_layout.h"

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

// Writes y[b, start:end) and returns the sum of the log-det terms there.
double spline_forward_tile(const SplineLayout& layout, const SplineConfig& config, const SplineForwardTensors& io,
                           int64_t b, int64_t start, int64_t end);

// Writes grad_x[b, start:end) and the parameters' gradients of those elements.
void spline_backward_tile(const SplineLayout& layout, const SplineConfig& config, const SplineBackwardTensors& io,
                          int64_t b, int64_t start, int64_t end);

}  // namespace cpu
}  // namespace nf_kernels
