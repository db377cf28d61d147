// Torch glue of the CPU kernels: allocate outputs, cut the batch into tiles, run them on at::parallel_for and
// add each sample's tile partial sums of the log-det pairwise in tile order (so the result does not depend on
// the thread count).
#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../ops/op_arguments.h"
#include "tile_kernels.h"
#include "tiling.h"

namespace nf_kernels {
namespace cpu {
namespace {

const void* bias_data(const CouplingCall& call) {
  return call.h_bias.defined() ? call.h_bias.const_data_ptr() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> coupling_forward(const at::Tensor& x, const at::Tensor& h,
                                                    const std::optional<at::Tensor>& transformed,
                                                    at::IntArrayRef packed_layout, double clamp, double clamp_low,
                                                    const std::optional<at::Tensor>& h_index, bool poison,
                                                    const std::optional<at::Tensor>& h_bias) {
  const ForwardOp out =
      prepare_forward("nf_kernels_ext::coupling_forward", x, h,
                      LayoutArgs{transformed, packed_layout, clamp, clamp_low, h_index, h_bias}, poison);
  at::Tensor y = out.y, logdet = out.logdet;
  if (out.empty) return {y, logdet};
  const CouplingCall& call = out.call;
  const FlatLayout& layout = call.layout;
  const ForwardTensors io{call.x.const_data_ptr(), dtype_code(x.scalar_type()), call.h.const_data_ptr(),
                          dtype_code(h.scalar_type()), y.mutable_data_ptr(), bias_data(call)};
  const TileKernels& kernels = selected_tile_kernels();
  const Tiling tiling(layout.batch, layout.numel);
  std::vector<double> partials(static_cast<size_t>(tiling.count));
  for_each_tile(tiling, [&](int64_t tile, int64_t b, int64_t start, int64_t end) {
    partials[tile] = kernels.forward_tile(layout, call.config, io, b, start, end);
  });
  sum_partials(partials, tiling.per_sample, logdet);
  return {y, logdet};
}

std::tuple<at::Tensor, at::Tensor> coupling_backward(const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                                     const at::Tensor& x, const at::Tensor& h,
                                                     const std::optional<at::Tensor>& transformed,
                                                     at::IntArrayRef packed_layout, double clamp, double clamp_low,
                                                     const std::optional<at::Tensor>& h_index, bool poison,
                                                     const std::optional<at::Tensor>& h_bias) {
  const BackwardOp out = prepare_backward("nf_kernels_ext::coupling_backward", grad_y, grad_logdet, x, h,
                       LayoutArgs{transformed, packed_layout, clamp, clamp_low, h_index, h_bias}, poison,
                       GradYDType::kAsGiven);
  if (out.empty) return {out.grad_x, out.grad_h};
  const CouplingCall& call = out.call;
  const FlatLayout& layout = call.layout;
  const BackwardTensors io{out.grad_y.const_data_ptr(), dtype_code(out.grad_y.scalar_type()),
                           out.grad_logdet.const_data_ptr(), call.x.const_data_ptr(),
                           dtype_code(x.scalar_type()), call.h.const_data_ptr(),
                           dtype_code(h.scalar_type()), out.grad_x.mutable_data_ptr(),
                           out.grad_h.mutable_data_ptr(), bias_data(call)};
  const TileKernels& kernels = selected_tile_kernels();
  for_each_tile(Tiling(layout.batch, layout.numel), [&](int64_t, int64_t b, int64_t start, int64_t end) {
    kernels.backward_tile(layout, call.config, io, b, start, end);
  });
  return {out.grad_x, out.grad_h};
}

}  // namespace
}  // namespace cpu
}  // namespace nf_kernels

TORCH_LIBRARY_IMPL(nf_kernels_ext, CPU, m) {
  m.impl("coupling_forward", &nf_kernels::cpu::coupling_forward);
  m.impl("coupling_backward", &nf_kernels::cpu::coupling_backward);
}
