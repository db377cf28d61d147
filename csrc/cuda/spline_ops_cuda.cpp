// Torch glue of the CUDA spline kernels: checks (shared with the CPU ops, spline_arguments.h), outputs, device
// guard, current stream, launch-error check. Compiled only when torch has CUDA and nvcc exists (nf_kernels/_build.py).
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ops/spline_arguments.h"
#include "spline_kernels.cuh"

namespace nf_kernels {
namespace cuda {
namespace {

void check_cuda(const char* op, cudaError_t error) {
  TORCH_CHECK(error == cudaSuccess, op, ": CUDA error: ", cudaGetErrorString(error));
}

std::tuple<at::Tensor, at::Tensor> spline_forward(const at::Tensor& x, const at::Tensor& params,
                                                  const std::optional<at::Tensor>& transformed,
                                                  at::IntArrayRef packed_layout, double bound, double min_bin_width,
                                                  double min_bin_height, double min_derivative, bool poison) {
  const char* op = "nf_kernels_ext::spline_forward";
  const c10::cuda::CUDAGuard guard(x.device());
  const SplineForwardOp out = prepare_spline_forward(op, x, params, transformed, packed_layout,
                                                     {bound, min_bin_width, min_bin_height, min_derivative}, poison);
  if (out.empty) return {out.y, out.logdet};
  const SplineCall& call = out.call;
  const int64_t partials = spline_forward_partials(call.layout);
  at::Tensor workspace;
  if (partials > 0) workspace = at::empty({partials}, out.logdet.options());
  const SplineForwardArgs args{call.layout,
                               call.config,
                               call.x.const_data_ptr(),
                               dtype_code(x.scalar_type()),
                               call.params.const_data_ptr(),
                               dtype_code(params.scalar_type()),
                               out.y.mutable_data_ptr(),
                               out.logdet.mutable_data_ptr()};
  check_cuda(op, launch_spline_forward(args, workspace.defined() ? workspace.mutable_data_ptr() : nullptr,
                                       c10::cuda::getCurrentCUDAStream()));
  return {out.y, out.logdet};
}

std::tuple<at::Tensor, at::Tensor> spline_backward(const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                                   const at::Tensor& x, const at::Tensor& params,
                                                   const std::optional<at::Tensor>& transformed,
                                                   at::IntArrayRef packed_layout, double bound, double min_bin_width,
                                                   double min_bin_height, double min_derivative, bool poison) {
  const char* op = "nf_kernels_ext::spline_backward";
  const c10::cuda::CUDAGuard guard(x.device());
  const SplineBackwardOp out =
      prepare_spline_backward(op, grad_y, grad_logdet, x, params, transformed, packed_layout,
                              {bound, min_bin_width, min_bin_height, min_derivative}, poison);
  if (out.empty) return {out.grad_x, out.grad_params};
  const SplineCall& call = out.call;
  const SplineBackwardArgs args{call.layout,
                                call.config,
                                out.grad_y.const_data_ptr(),
                                out.grad_logdet.const_data_ptr(),
                                call.x.const_data_ptr(),
                                dtype_code(x.scalar_type()),
                                call.params.const_data_ptr(),
                                dtype_code(params.scalar_type()),
                                out.grad_x.mutable_data_ptr(),
                                out.grad_params.mutable_data_ptr()};
  check_cuda(op, launch_spline_backward(args, c10::cuda::getCurrentCUDAStream()));
  return {out.grad_x, out.grad_params};
}

}  // namespace
}  // namespace cuda
}  // namespace nf_kernels

TORCH_LIBRARY_IMPL(nf_kernels_ext, CUDA, m) {
  m.impl("spline_forward", &nf_kernels::cuda::spline_forward);
  m.impl("spline_backward", &nf_kernels::cuda::spline_backward);
}
