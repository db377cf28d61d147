// Torch glue of the CPU spline kernels: check the call (spline_arguments.h), allocate, cut the batch into tiles
// and run them on at::parallel_for (tiling.h), add each sample's tile sums of the log-det pairwise in tile order.
// Short samples instead go to the kernels in runs of whole samples, several to a chunk (packs_samples).
#include <vector>

#include <torch/library.h>

#include "../ops/spline_arguments.h"
#include "spline_tiles.h"
#include "tiling.h"

namespace nf_kernels {
namespace cpu {
namespace {

// A spline element costs some fifty times an affine one: parallel tasks are worth it from fewer elements.
constexpr int64_t kMinSplineElementsPerTask = 1024;

// body(b0, b1) over runs of whole samples, in parallel (packs_samples): each task at least
// kMinSplineElementsPerTask transformable elements.
template <class Body>
void for_each_sample_run(const SplineLayout& layout, const Body& body) {
  const int64_t span = layout.select.hi - layout.select.lo;
  at::parallel_for(0, layout.select.batch, std::max<int64_t>(1, kMinSplineElementsPerTask / span), body);
}

std::tuple<at::Tensor, at::Tensor> spline_forward(const at::Tensor& x, const at::Tensor& params,
                                                  const std::optional<at::Tensor>& transformed,
                                                  at::IntArrayRef packed_layout, double bound, double min_bin_width,
                                                  double min_bin_height, double min_derivative, bool poison) {
  SplineForwardOp out =
      prepare_spline_forward("nf_kernels_ext::spline_forward", x, params, transformed, packed_layout,
                             {bound, min_bin_width, min_bin_height, min_derivative}, poison);
  if (out.empty) return {out.y, out.logdet};
  const SplineCall& call = out.call;
  const SplineLayout& layout = call.layout;
  const SplineForwardTensors io{call.x.const_data_ptr(), dtype_code(x.scalar_type()), call.params.const_data_ptr(),
                                dtype_code(params.scalar_type()), out.y.mutable_data_ptr()};
  const SplineTileKernels& kernels = selected_spline_tile_kernels();
  if (packs_samples(layout)) {
    std::vector<double> sums(static_cast<size_t>(layout.select.batch));
    for_each_sample_run(layout, [&](int64_t b0, int64_t b1) {
      kernels.forward_samples(layout, call.config, io, b0, b1, sums.data() + b0);
    });
    sum_partials(sums, 1, out.logdet);
    return {out.y, out.logdet};
  }
  const Tiling tiling(layout.select.batch, layout.select.numel, kMinSplineElementsPerTask);
  std::vector<double> partials(static_cast<size_t>(tiling.count));
  for_each_tile(tiling, [&](int64_t tile, int64_t b, int64_t start, int64_t end) {
    partials[tile] = kernels.forward_tile(layout, call.config, io, b, start, end);
  });
  sum_partials(partials, tiling.per_sample, out.logdet);
  return {out.y, out.logdet};
}

std::tuple<at::Tensor, at::Tensor> spline_backward(const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                                   const at::Tensor& x, const at::Tensor& params,
                                                   const std::optional<at::Tensor>& transformed,
                                                   at::IntArrayRef packed_layout, double bound, double min_bin_width,
                                                   double min_bin_height, double min_derivative, bool poison) {
  SplineBackwardOp out =
      prepare_spline_backward("nf_kernels_ext::spline_backward", grad_y, grad_logdet, x, params, transformed,
                              packed_layout, {bound, min_bin_width, min_bin_height, min_derivative}, poison);
  if (out.empty) return {out.grad_x, out.grad_params};
  const SplineCall& call = out.call;
  const SplineLayout& layout = call.layout;
  const SplineBackwardTensors io{out.grad_y.const_data_ptr(),      out.grad_logdet.const_data_ptr(),
                                 call.x.const_data_ptr(),          dtype_code(x.scalar_type()),
                                 call.params.const_data_ptr(),     dtype_code(params.scalar_type()),
                                 out.grad_x.mutable_data_ptr(),    out.grad_params.mutable_data_ptr()};
  const SplineTileKernels& kernels = selected_spline_tile_kernels();
  if (packs_samples(layout)) {
    for_each_sample_run(layout, [&](int64_t b0, int64_t b1) {
      kernels.backward_samples(layout, call.config, io, b0, b1);
    });
    return {out.grad_x, out.grad_params};
  }
  const Tiling tiling(layout.select.batch, layout.select.numel, kMinSplineElementsPerTask);
  for_each_tile(tiling, [&](int64_t, int64_t b, int64_t start, int64_t end) {
    kernels.backward_tile(layout, call.config, io, b, start, end);
  });
  return {out.grad_x, out.grad_params};
}

}  // namespace
}  // namespace cpu
}  // namespace nf_kernels

TORCH_LIBRARY_IMPL(nf_kernels_ext, CPU, m) {
  m.impl("spline_forward", &nf_kernels::cpu::spline_forward);
  m.impl("spline_backward", &nf_kernels::cpu::spline_backward);
}
