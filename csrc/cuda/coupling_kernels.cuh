// The CUDA kernels' torch-free interface: raw pointers, dtype codes, an explicit stream. The torch glue
// (ops_cuda.cpp) allocates, picks the stream and device, and checks the returned error.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../coupling_layout.h"

namespace nf_kernels {
namespace cuda {

struct ForwardArgs {
  FlatLayout layout;  // layout.transformed is a device pointer
  CouplingConfig config;
  const void* x;
  DType x_dtype;
  const void* h;
  DType h_dtype;
  void* y;       // x_dtype, contiguous like x
  void* logdet;  // [B], the compute type: double if x is float64, else float
};

struct BackwardArgs {
  FlatLayout layout;
  CouplingConfig config;
  const void* grad_y;       // x_dtype (the glue converts other dtypes)
  const void* grad_logdet;  // [B], the compute type
  const void* x;
  DType x_dtype;
  const void* h;
  DType h_dtype;
  void* grad_x;  // x_dtype
  void* grad_h;  // h_dtype
};

// Log-det partial sums the forward writes: 0 when every sample's log-det comes from a single chunk (the kernel
// writes it directly), else batch * chunks, and launch_forward then needs a workspace of that many elements of the
// compute type (added in a fixed order by a second kernel: no atomics, so the log-det is reproducible bit for bit).
// A function of the layout and the dtypes only.
int64_t forward_partials(const FlatLayout& layout, DType x_dtype, DType h_dtype);

cudaError_t launch_forward(const ForwardArgs& args, void* workspace, int sm_count, cudaStream_t stream);
cudaError_t launch_backward(const BackwardArgs& args, int sm_count, cudaStream_t stream);

}  // namespace cuda
}  // namespace nf_kernels
