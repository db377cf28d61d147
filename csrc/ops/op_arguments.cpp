#include "op_arguments.h"

#include <limits>

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

namespace nf_kernels {

DType dtype_code(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK_TYPE(false, "nf_kernels_ext: unsupported dtype ", type, " (float32, float64, float16 or bfloat16)");
  }
}

at::ScalarType compute_type(at::ScalarType x_type) { return x_type == at::kDouble ? at::kDouble : at::kFloat; }

at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options, bool poison) {
  at::Tensor out = at::empty(sizes, options);
  if (poison) out.fill_(std::numeric_limits<double>::quiet_NaN());
  return out;
}

CouplingCall make_coupling_call(const char* op, const at::Tensor& x, const at::Tensor& h,
                                const std::optional<at::Tensor>& transformed, at::IntArrayRef layout, double clamp) {
  TORCH_CHECK(layout.size() == kLayoutFieldCount, op, ": the packed layout needs ", kLayoutFieldCount, " ints, got ",
              layout.size());
  const int64_t lo = layout[kFieldLo], hi = layout[kFieldHi], h_stride = layout[kFieldHStride];
  const int64_t t_offset = layout[kFieldTOffset], pattern = layout[kFieldPattern], parity = layout[kFieldParity];
  const int64_t width = layout[kFieldWidth], plane = layout[kFieldPlane], scale = layout[kFieldScale];
  const bool shift_first = layout[kFieldShiftFirst] != 0, reverse = layout[kFieldReverse] != 0;
  TORCH_CHECK(x.dim() >= 1, op, ": x needs a batch dimension, got a 0-d tensor");
  dtype_code(x.scalar_type());
  dtype_code(h.scalar_type());
  TORCH_CHECK(h.device() == x.device(), op, ": x is on ", x.device(), " but h is on ", h.device());
  const int64_t batch = x.size(0);
  int64_t numel = 1;
  for (int64_t d = 1; d < x.dim(); ++d) numel *= x.size(d);
  TORCH_CHECK(scale >= 0 && scale < kScaleCount, op, ": scale code ", scale, " is not one of 0..", kScaleCount - 1);
  TORCH_CHECK(pattern >= 0 && pattern < kPatternCount, op, ": pattern code ", pattern, " is not one of 0..",
              kPatternCount - 1);
  TORCH_CHECK(scale == kAdditive || clamp > 0, op, ": clamp must be > 0, got ", clamp);
  TORCH_CHECK(0 <= lo && lo <= hi && hi <= numel, op, ": need 0 <= lo <= hi <= numel, got lo=", lo, " hi=", hi,
              " numel=", numel);
  const int64_t span = hi - lo;
  // h holds s_raw then t (or t alone) for the span, nothing else: every element of grad_h gets written.
  const int64_t expected_offset = scale == kAdditive ? 0 : span;
  TORCH_CHECK(t_offset == expected_offset && h_stride == t_offset + span, op, ": h_stride=", h_stride,
              " t_offset=", t_offset, " do not describe [s_raw, t] for ", span, " transformable elements");
  TORCH_CHECK(h.numel() == batch * h_stride, op, ": h has ", h.numel(), " elements, expected B * h_stride = ",
              batch * h_stride);
  CouplingCall call;
  call.x = x.contiguous();
  call.h = h.contiguous();
  if (pattern == kPatternCheckerboard) {
    TORCH_CHECK(width >= 1 && plane >= width && plane % width == 0 && numel % plane == 0 && (parity == 0 || parity == 1),
                op, ": invalid checkerboard geometry width=", width, " plane=", plane, " parity=", parity,
                " for ", numel, " elements a sample");
  }
  if (pattern == kPatternMask) {
    TORCH_CHECK(transformed.has_value() && transformed->defined(), op, ": the mask pattern needs `transformed`");
    TORCH_CHECK(transformed->scalar_type() == at::kByte && transformed->numel() == numel &&
                    transformed->device() == x.device(),
                op, ": `transformed` must be uint8 with one entry per element of a sample (", numel, ") on ",
                x.device(), ", got ", transformed->scalar_type(), " with ", transformed->numel(), " entries on ",
                transformed->device());
    call.transformed = transformed->contiguous();
  }
  call.layout = FlatLayout{batch,  numel, lo, hi, h_stride, t_offset, static_cast<int>(pattern),
                           static_cast<int>(parity), width, plane,
                           call.transformed.defined() ? call.transformed.const_data_ptr<uint8_t>() : nullptr};
  call.config = CouplingConfig{static_cast<int>(scale), clamp, shift_first, reverse};
  return call;
}

void check_backward_grads(const char* op, const CouplingCall& call, const at::Tensor& grad_y,
                          const at::Tensor& grad_logdet) {
  dtype_code(grad_y.scalar_type());
  dtype_code(grad_logdet.scalar_type());
  TORCH_CHECK(grad_y.sizes() == call.x.sizes(), op, ": grad_y has shape ", grad_y.sizes(), ", x has ",
              call.x.sizes());
  TORCH_CHECK(grad_logdet.numel() == call.layout.batch, op, ": grad_logdet needs one entry per sample (",
              call.layout.batch, "), got ", grad_logdet.numel());
  TORCH_CHECK(grad_y.device() == call.x.device() && grad_logdet.device() == call.x.device(), op,
              ": grad_y and grad_logdet must be on x's device ", call.x.device());
}

ForwardOp prepare_forward(const char* op, const at::Tensor& x, const at::Tensor& h,
                          const std::optional<at::Tensor>& transformed, at::IntArrayRef layout, double clamp,
                          bool poison) {
  ForwardOp out;
  out.call = make_coupling_call(op, x, h, transformed, layout, clamp);
  const at::Tensor& cx = out.call.x;
  out.y = new_output(cx.sizes(), cx.options(), poison);
  out.logdet = new_output({out.call.layout.batch}, cx.options().dtype(compute_type(cx.scalar_type())), poison);
  out.empty = out.call.layout.batch == 0 || out.call.layout.numel == 0;
  if (out.empty) out.logdet.zero_();
  return out;
}

BackwardOp prepare_backward(const char* op, const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                            const at::Tensor& x, const at::Tensor& h, const std::optional<at::Tensor>& transformed,
                            at::IntArrayRef layout, double clamp, bool poison, GradYDType grad_y_dtype) {
  BackwardOp out;
  out.call = make_coupling_call(op, x, h, transformed, layout, clamp);
  check_backward_grads(op, out.call, grad_y, grad_logdet);
  out.grad_x = new_output(out.call.x.sizes(), out.call.x.options(), poison);
  out.grad_h = new_output(out.call.h.sizes(), out.call.h.options(), poison);
  out.empty = out.call.layout.batch == 0 || out.call.layout.numel == 0;
  if (out.empty) {
    out.grad_x.zero_();
    out.grad_h.zero_();
    return out;
  }
  const at::ScalarType x_type = out.call.x.scalar_type();
  out.grad_y = (grad_y_dtype == GradYDType::kLikeX ? grad_y.to(x_type) : grad_y).contiguous();
  out.grad_logdet = grad_logdet.to(compute_type(x_type)).contiguous();
  return out;
}

}  // namespace nf_kernels
