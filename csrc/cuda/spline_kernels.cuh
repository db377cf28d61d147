// The CUDA spline kernels' torch-free interface: raw pointers, dtype codes, an explicit stream. The torch glue
// (spline_ops_cuda.cpp) checks the call, allocates, picks the stream and device, and checks the returned error.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../spline_layout.h"

namespace nf_kernels {
namespace cuda {

struct SplineForwardArgs {
  SplineLayout layout;  // layout.select.transformed is a device pointer
  SplineConfig config;
  const void* x;
  DType x_dtype;
  const void* params;
  DType params_dtype;
  void* y;       // x_dtype, contiguous like x
  void* logdet;  // [B], the compute type: double if x is float64, else float
};

struct SplineBackwardArgs {
  SplineLayout layout;
  SplineConfig config;
  const void* grad_y;       // x_dtype
  const void* grad_logdet;  // [B], the compute type
  const void* x;
  DType x_dtype;
  const void* params;
  DType params_dtype;
  void* grad_x;       // x_dtype
  void* grad_params;  // params_dtype
};

// Log-det partial sums the forward writes: 0 when every sample is one chunk (the kernel writes the log-det), else
// batch * chunks, and launch_spline_forward then needs a workspace of that many elements of the compute type
// (added in a fixed order by a second kernel: no atomics, the same bits on every run). A function of the shapes.
int64_t spline_forward_partials(const SplineLayout& layout);

cudaError_t launch_spline_forward(const SplineForwardArgs& args, void* workspace, cudaStream_t stream);
cudaError_t launch_spline_backward(const SplineBackwardArgs& args, cudaStream_t stream);

}  // namespace cuda
}  // namespace nf_kernels
