#include "spline_arguments.h"

#include <cmath>

#include <c10/util/Exception.h>

namespace nf_kernels {
namespace {

SplineCall make_spline_call(const char* op, const at::Tensor& x, const at::Tensor& params,
                            const std::optional<at::Tensor>& transformed, at::IntArrayRef layout,
                            const SplineShape& shape) {
  TORCH_CHECK_VALUE(layout.size() == kSplineLayoutFieldCount, op, ": the packed layout needs ",
                    kSplineLayoutFieldCount, " ints, got ", layout.size());
  const int64_t lo = layout[kSplineFieldLo], hi = layout[kSplineFieldHi];
  const int64_t params_stride = layout[kSplineFieldParamsStride], inner = layout[kSplineFieldInner];
  const int64_t pattern = layout[kSplineFieldPattern], parity = layout[kSplineFieldParity];
  const int64_t width = layout[kSplineFieldWidth], plane = layout[kSplineFieldPlane];
  const int64_t bins = layout[kSplineFieldBins];
  const bool reverse = layout[kSplineFieldReverse] != 0;
  TORCH_CHECK_VALUE(bins >= 1 && bins <= kMaxSplineBins, op, ": bins=", bins, " is not supported: the kernels ",
                    "are compiled for 1 to ", kMaxSplineBins, " bins");
  TORCH_CHECK_VALUE(std::isfinite(shape.bound) && shape.bound > 0, op, ": bound must be finite and > 0, got ",
                    shape.bound);
  TORCH_CHECK_VALUE(shape.min_bin_width >= 0 && shape.min_bin_width * bins < 1, op,
                    ": need 0 <= min_bin_width and min_bin_width * bins < 1, got min_bin_width=", shape.min_bin_width,
                    " with bins=", bins);
  TORCH_CHECK_VALUE(shape.min_bin_height >= 0 && shape.min_bin_height * bins < 1, op,
                    ": need 0 <= min_bin_height and min_bin_height * bins < 1, got min_bin_height=",
                    shape.min_bin_height, " with bins=", bins);
  TORCH_CHECK_VALUE(std::isfinite(shape.min_derivative) && shape.min_derivative > 0, op,
                    ": min_derivative must be finite and > 0, got ", shape.min_derivative);
  TORCH_CHECK_VALUE(x.dim() >= 2, op, ": x needs a batch and a channel dimension, got shape ", x.sizes());
  dtype_code(x.scalar_type());
  dtype_code(params.scalar_type());
  TORCH_CHECK_VALUE(params.device() == x.device(), op, ": x is on ", x.device(), " but params is on ",
                    params.device());
  // The gather pattern is the affine op's compact h (an index array the spline op has no argument for).
  TORCH_CHECK_VALUE(pattern >= 0 && pattern <= kPatternMask, op, ": pattern code ", pattern, " is not one of 0..",
                    static_cast<int>(kPatternMask), " (range, checkerboard, mask)");
  const int64_t batch = x.size(0);
  int64_t numel = 1;
  for (int64_t d = 1; d < x.dim(); ++d) numel *= x.size(d);
  TORCH_CHECK_VALUE(0 <= lo && lo <= hi && hi <= numel, op, ": need 0 <= lo <= hi <= numel, got lo=", lo, " hi=",
                    hi, " numel=", numel);
  TORCH_CHECK_VALUE(inner >= 1 && (hi - lo) % inner == 0 && lo % inner == 0, op, ": inner=", inner,
                    " must divide lo=", lo, " and hi - lo=", hi - lo, " (whole channels)");
  const int64_t per_element = spline_params_per_element(static_cast<int>(bins));
  TORCH_CHECK_VALUE(params_stride == (hi - lo) * per_element, op, ": params_stride=", params_stride,
                    " does not describe ", per_element, " parameters for each of ", hi - lo,
                    " transformable elements");
  TORCH_CHECK_VALUE(params.dim() >= 1 && params.size(0) == batch && params.numel() == batch * params_stride, op,
                    ": params has shape ", params.sizes(), ", expected ", batch, " samples of ", params_stride,
                    " elements (", per_element, " parameters per transformable element)");
  SplineCall call;
  call.x = x.contiguous();
  call.params = params.contiguous();
  if (pattern == kPatternCheckerboard) {
    TORCH_CHECK_VALUE(width >= 1 && plane >= width && plane % width == 0 && numel % plane == 0 &&
                          (parity == 0 || parity == 1),
                      op, ": invalid checkerboard geometry width=", width, " plane=", plane, " parity=", parity,
                      " for ", numel, " elements a sample");
  }
  if (pattern == kPatternMask) {
    TORCH_CHECK_VALUE(transformed.has_value() && transformed->defined(), op, ": the mask pattern needs `transformed`");
    TORCH_CHECK_VALUE(transformed->scalar_type() == at::kByte && transformed->numel() == numel &&
                          transformed->device() == x.device(),
                      op, ": `transformed` must be uint8 with one entry per element of a sample (", numel, ") on ",
                      x.device(), ", got ", transformed->scalar_type(), " with ", transformed->numel(),
                      " entries on ", transformed->device());
    call.transformed = transformed->contiguous();
  }
  FlatLayout& select = call.layout.select;
  select = FlatLayout{};
  select.batch = batch;
  select.numel = numel;
  select.lo = lo;
  select.hi = hi;
  select.pattern = static_cast<int>(pattern);
  select.parity = static_cast<int>(parity);
  select.width = width;
  select.plane = plane;
  select.transformed = call.transformed.defined() ? call.transformed.const_data_ptr<uint8_t>() : nullptr;
  call.layout.params_stride = params_stride;
  call.layout.inner = inner;
  call.layout.bins = static_cast<int>(bins);
  call.config = SplineConfig{shape.bound, shape.min_bin_width, shape.min_bin_height, shape.min_derivative, reverse};
  return call;
}

bool empty_call(const SplineCall& call) { return call.layout.select.batch == 0 || call.layout.select.numel == 0; }

}  // namespace

SplineForwardOp prepare_spline_forward(const char* op, const at::Tensor& x, const at::Tensor& params,
                                       const std::optional<at::Tensor>& transformed, at::IntArrayRef layout,
                                       const SplineShape& shape, bool poison) {
  SplineForwardOp out;
  out.call = make_spline_call(op, x, params, transformed, layout, shape);
  const at::Tensor& cx = out.call.x;
  out.y = new_output(cx.sizes(), cx.options(), poison);
  out.logdet = new_output({out.call.layout.select.batch}, cx.options().dtype(compute_type(cx.scalar_type())), poison);
  out.empty = empty_call(out.call);
  if (out.empty) out.logdet.zero_();
  return out;
}

SplineBackwardOp prepare_spline_backward(const char* op, const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                         const at::Tensor& x, const at::Tensor& params,
                                         const std::optional<at::Tensor>& transformed, at::IntArrayRef layout,
                                         const SplineShape& shape, bool poison) {
  SplineBackwardOp out;
  out.call = make_spline_call(op, x, params, transformed, layout, shape);
  dtype_code(grad_y.scalar_type());
  dtype_code(grad_logdet.scalar_type());
  TORCH_CHECK_VALUE(grad_y.sizes() == out.call.x.sizes(), op, ": grad_y has shape ", grad_y.sizes(), ", x has ",
                    out.call.x.sizes());
  TORCH_CHECK_VALUE(grad_logdet.numel() == out.call.layout.select.batch, op,
                    ": grad_logdet needs one entry per sample (", out.call.layout.select.batch, "), got ",
                    grad_logdet.numel());
  TORCH_CHECK_VALUE(grad_y.device() == x.device() && grad_logdet.device() == x.device(), op,
                    ": grad_y and grad_logdet must be on x's device ", x.device());
  out.grad_x = new_output(out.call.x.sizes(), out.call.x.options(), poison);
  out.grad_params = new_output(out.call.params.sizes(), out.call.params.options(), poison);
  out.empty = empty_call(out.call);
  if (out.empty) {
    out.grad_x.zero_();
    out.grad_params.zero_();
    return out;
  }
  const at::ScalarType x_type = out.call.x.scalar_type();
  out.grad_y = grad_y.to(x_type).contiguous();
  out.grad_logdet = grad_logdet.to(compute_type(x_type)).contiguous();
  return out;
}

}  // namespace nf_kernels
