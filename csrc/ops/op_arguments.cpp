#include "op_arguments.h"

#include <algorithm>
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

namespace {

// h's parameters for `half` positions (n - lo, or a compact h's count): affine h is [s_raw, t] in one of the
// h_layout orders, base(p) + s_offset and base(p) + t_offset covering [0, h_stride) exactly once; additive h is t.
void check_h_layout(const char* op, int64_t scale, int64_t half, int64_t h_stride, int64_t s_offset, int64_t t_offset,
                    int64_t pair_inner) {
  if (scale == kAdditive) {
    TORCH_CHECK(s_offset == 0 && t_offset == 0 && pair_inner == 0 && h_stride == half, op,
                ": an additive coupling's h is t alone: need h_stride=", half, " and s_offset = t_offset = pair_inner "
                "= 0, got h_stride=", h_stride, " s_offset=", s_offset, " t_offset=", t_offset, " pair_inner=",
                pair_inner);
    return;
  }
  const bool scale_shift = s_offset == 0 && t_offset == half && pair_inner == 0;
  const bool shift_scale = s_offset == half && t_offset == 0 && pair_inner == 0;
  const bool pairs = pair_inner > 0 && half % pair_inner == 0 && s_offset == pair_inner && t_offset == 0;
  TORCH_CHECK(h_stride == 2 * half && (scale_shift || shift_scale || pairs), op, ": h_stride=", h_stride,
              " s_offset=", s_offset, " t_offset=", t_offset, " pair_inner=", pair_inner,
              " describe none of [s_raw, t], [t, s_raw] or (t, s_raw) channel pairs for ", half, " transformed positions");
}

// A per-element table of the call, checked: `dtype`, one entry per element of a sample, on x's device.
at::Tensor per_element(const char* op, const char* name, const std::optional<at::Tensor>& table, at::ScalarType dtype,
                       const at::Tensor& x, int64_t numel, const char* pattern) {
  TORCH_CHECK(table.has_value() && table->defined(), op, ": the ", pattern, " pattern needs `", name, "`");
  TORCH_CHECK(table->scalar_type() == dtype && table->numel() == numel && table->device() == x.device(), op, ": `",
              name, "` must be ", dtype, " with one entry per element of a sample (", numel, ") on ", x.device(),
              ", got ", table->scalar_type(), " with ", table->numel(), " entries on ", table->device());
  return table->contiguous();
}

}  // namespace

CouplingCall make_coupling_call(const char* op, const at::Tensor& x, const at::Tensor& h, const LayoutArgs& args) {
  const at::IntArrayRef layout = args.layout;
  const double clamp = args.clamp;
  TORCH_CHECK(layout.size() == kLayoutFieldCount, op, ": the packed layout needs ", kLayoutFieldCount, " ints, got ",
              layout.size());
  const int64_t lo = layout[kFieldLo], hi = layout[kFieldHi], h_stride = layout[kFieldHStride];
  const int64_t t_offset = layout[kFieldTOffset], pattern = layout[kFieldPattern], parity = layout[kFieldParity];
  const int64_t width = layout[kFieldWidth], plane = layout[kFieldPlane], scale = layout[kFieldScale];
  const int64_t s_offset = layout[kFieldSOffset], pair_inner = layout[kFieldPairInner];
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
  if (scale == kClip) {
    TORCH_CHECK(args.clamp_low < clamp, op, ": scale 'clip' needs clamp_low < clamp, got clamp_low=", args.clamp_low,
                " clamp=", clamp);
  } else {
    TORCH_CHECK(scale == kAdditive || clamp > 0, op, ": clamp must be > 0, got ", clamp);
  }
  TORCH_CHECK(0 <= lo && lo <= hi && hi <= numel, op, ": need 0 <= lo <= hi <= numel, got lo=", lo, " hi=", hi,
              " numel=", numel);
  TORCH_CHECK(pattern != kPatternGather || (lo == 0 && hi == numel), op,
              ": a compact h's table covers the whole sample: need lo=0 and hi=numel, got lo=", lo, " hi=", hi);
  TORCH_CHECK(s_offset >= 0 && t_offset >= 0 && pair_inner >= 0 && h_stride >= 0, op,
              ": layout offsets must be >= 0");
  // Positions: n - lo over the span, or a compact h's count (h's size: the op layer has checked it against the mask).
  const int64_t half = pattern == kPatternGather ? (scale == kAdditive ? h_stride : h_stride / 2) : hi - lo;
  check_h_layout(op, scale, half, h_stride, s_offset, t_offset, pair_inner);
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
  if (pattern == kPatternMask)
    call.transformed = per_element(op, "transformed", args.transformed, at::kByte, x, numel, "mask");
  if (pattern == kPatternGather) {
    call.h_index = per_element(op, "h_index", args.h_index, at::kInt, x, numel, "gather");
    if (x.device().is_cpu() && numel > 0) {
      // Every entry a position of h or -1: read here on the CPU, where it costs one pass over a sample's table (on a
      // GPU it would cost a synchronization; nf_kernels builds the table from the mask, nothing else does).
      const int32_t* table = call.h_index.const_data_ptr<int32_t>();
      int64_t lowest = table[0], highest = table[0];
      for (int64_t n = 1; n < numel; ++n) lowest = std::min<int64_t>(lowest, table[n]), highest = std::max<int64_t>(highest, table[n]);
      TORCH_CHECK(lowest >= -1 && highest < half, op, ": `h_index` entries must be -1 or positions below ", half,
                  ", got entries from ", lowest, " to ", highest);
    }
  }
  FlatLayout flat{batch,  numel, lo, hi, h_stride, t_offset, static_cast<int>(pattern),
                  static_cast<int>(parity), width, plane,
                  call.transformed.defined() ? call.transformed.const_data_ptr<uint8_t>() : nullptr};
  flat.s_offset = s_offset;
  flat.pair_inner = pair_inner;
  if (pair_inner > 0) flat.pair_div = make_fast_div(static_cast<uint64_t>(pair_inner));
  flat.h_index = call.h_index.defined() ? call.h_index.const_data_ptr<int32_t>() : nullptr;
  call.layout = flat;
  call.config = CouplingConfig{static_cast<int>(scale), clamp, shift_first, reverse, args.clamp_low};
  if (args.h_bias.has_value() && args.h_bias->defined()) {
    const at::Tensor& bias = *args.h_bias;
    TORCH_CHECK_VALUE(bias.dim() == 1 && bias.numel() == h_stride && bias.scalar_type() == h.scalar_type() &&
                          bias.device() == h.device(),
                      op, ": `h_bias` must be 1-D with one value per parameter of a sample (", h_stride, "), in h's ",
                      "dtype ", h.scalar_type(), " on ", h.device(), ", got shape ", bias.sizes(), " ",
                      bias.scalar_type(), " on ", bias.device());
    TORCH_CHECK_VALUE(params_in_runs(flat), op, ": `h_bias` needs a layout whose parameters are runs of h (not (t, ",
                      "s_raw) channel pairs or a compact h)");
    call.h_bias = bias.contiguous();
  }
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

ForwardOp prepare_forward(const char* op, const at::Tensor& x, const at::Tensor& h, const LayoutArgs& args,
                          bool poison) {
  ForwardOp out;
  out.call = make_coupling_call(op, x, h, args);
  const at::Tensor& cx = out.call.x;
  out.y = new_output(cx.sizes(), cx.options(), poison);
  out.logdet = new_output({out.call.layout.batch}, cx.options().dtype(compute_type(cx.scalar_type())), poison);
  out.empty = out.call.layout.batch == 0 || out.call.layout.numel == 0;
  if (out.empty) out.logdet.zero_();
  return out;
}

BackwardOp prepare_backward(const char* op, const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                            const at::Tensor& x, const at::Tensor& h, const LayoutArgs& args, bool poison,
                            GradYDType grad_y_dtype) {
  BackwardOp out;
  out.call = make_coupling_call(op, x, h, args);
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
