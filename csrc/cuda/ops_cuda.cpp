// Torch glue of the CUDA kernels: checks (shared with the CPU ops), outputs, device guard, current stream,
// launch-error check. Compiled only when torch has CUDA and nvcc exists (nf_kernels/_build.py).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ops/op_arguments.h"
#include "coupling_kernels.cuh"

namespace nf_kernels {
namespace cuda {
namespace {

void check_cuda(const char* op, cudaError_t error) {
  TORCH_CHECK(error == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(error));
}

// Multiprocessors of the current device (the guard has set it); the driver answers from a cache.
int sm_count(const char* op) {
  int device = 0, count = 0;
  check_cuda(op, cudaGetDevice(&device));
  check_cuda(op, cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

// h_bias is the CPU kernels' (csrc/ops/schema.cpp): on CUDA, addmm can add a product's bias in cuBLASLt's epilogue, with
// no pass of its own to save.
void check_no_bias(const char* op, const std::optional<at::Tensor>& h_bias) {
  TORCH_CHECK_VALUE(!(h_bias.has_value() && h_bias->defined()), op, ": `h_bias` is implemented by the CPU kernels ",
                    "only");
}

std::tuple<at::Tensor, at::Tensor> coupling_forward(const at::Tensor& x, const at::Tensor& h,
                                                    const std::optional<at::Tensor>& transformed,
                                                    at::IntArrayRef packed_layout, double clamp, double clamp_low,
                                                    const std::optional<at::Tensor>& h_index, bool poison,
                                                    const std::optional<at::Tensor>& h_bias) {
  const char* op = "nf_kernels_ext::coupling_forward";
  check_no_bias(op, h_bias);
  const c10::cuda::CUDAGuard guard(x.device());
  const ForwardOp out =
      prepare_forward(op, x, h, LayoutArgs{transformed, packed_layout, clamp, clamp_low, h_index, h_bias}, poison);
  if (out.empty) return {out.y, out.logdet};
  const CouplingCall& call = out.call;
  const FlatLayout& layout = call.layout;
  const int sms = sm_count(op);
  const int64_t partials = forward_partials(layout, dtype_code(x.scalar_type()), dtype_code(h.scalar_type()));
  at::Tensor workspace;
  if (partials > 0) workspace = at::empty({partials}, out.logdet.options());
  const ForwardArgs args{layout,
                         call.config,
                         call.x.const_data_ptr(),
                         dtype_code(x.scalar_type()),
                         call.h.const_data_ptr(),
                         dtype_code(h.scalar_type()),
                         out.y.mutable_data_ptr(),
                         out.logdet.mutable_data_ptr()};
  check_cuda(op, launch_forward(args, workspace.defined() ? workspace.mutable_data_ptr() : nullptr, sms,
                                  c10::cuda::getCurrentCUDAStream()));
  return {out.y, out.logdet};
}

std::tuple<at::Tensor, at::Tensor> coupling_backward(const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                                     const at::Tensor& x, const at::Tensor& h,
                                                     const std::optional<at::Tensor>& transformed,
                                                     at::IntArrayRef packed_layout, double clamp, double clamp_low,
                                                     const std::optional<at::Tensor>& h_index, bool poison,
                                                     const std::optional<at::Tensor>& h_bias) {
  const char* op = "nf_kernels_ext::coupling_backward";
  check_no_bias(op, h_bias);
  const c10::cuda::CUDAGuard guard(x.device());
  // The kernels read grad_y in x's dtype (autograd always passes that) and grad_logdet in the compute type.
  const BackwardOp out = prepare_backward(op, grad_y, grad_logdet, x, h, LayoutArgs{transformed, packed_layout, clamp, clamp_low, h_index, h_bias},
                       poison, GradYDType::kLikeX);
  if (out.empty) return {out.grad_x, out.grad_h};
  const CouplingCall& call = out.call;
  const FlatLayout& layout = call.layout;
  const BackwardArgs args{layout,
                          call.config,
                          out.grad_y.const_data_ptr(),
                          out.grad_logdet.const_data_ptr(),
                          call.x.const_data_ptr(),
                          dtype_code(x.scalar_type()),
                          call.h.const_data_ptr(),
                          dtype_code(h.scalar_type()),
                          out.grad_x.mutable_data_ptr(),
                          out.grad_h.mutable_data_ptr()};
  check_cuda(op, launch_backward(args, sm_count(op), c10::cuda::getCurrentCUDAStream()));
  return {out.grad_x, out.grad_h};
}

}  // namespace
}  // namespace cuda
}  // namespace nf_kernels

TORCH_LIBRARY_IMPL(nf_kernels_ext, CUDA, m) {
  m.impl("coupling_forward", &nf_kernels::cuda::coupling_forward);
  m.impl("coupling_backward", &nf_kernels::cuda::coupling_backward);
}
