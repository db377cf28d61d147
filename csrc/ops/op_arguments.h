// Checking the arguments of the nf_kernels_ext ops and turning them into the torch-free FlatLayout the kernels
// take. Shared by the CPU and CUDA glue, so both reject the same bad calls with the same messages.
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>

#include "../coupling_layout.h"

namespace nf_kernels {

// The validated call: contiguous tensors (kept alive here, the layout points into `transformed`) plus the flat
// description of the coupling.
struct CouplingCall {
  at::Tensor x;
  at::Tensor h;
  at::Tensor transformed;  // undefined unless layout.pattern == kPatternMask
  at::Tensor h_index;      // undefined unless layout.pattern == kPatternGather
  at::Tensor h_bias;       // undefined unless given: [h_stride], h's dtype, added to every sample's h as it is read
  FlatLayout layout;
  CouplingConfig config;
};

// The ops' arguments after x and h (csrc/ops/schema.cpp), as one value. `layout` is the packed layout (the ints of
// kLayoutFieldNames, as nf_kernels._layout computed them); `clamp_low` the lower bound of "clip"; `h_index` a compact
// h's table of positions (pattern "gather"); `h_bias` the raw ops' bias on h (csrc/ops/schema.cpp's NF_RAW_ARGS).
struct LayoutArgs {
  const std::optional<at::Tensor>& transformed;
  at::IntArrayRef layout;
  double clamp;
  double clamp_low;
  const std::optional<at::Tensor>& h_index;
  const std::optional<at::Tensor>& h_bias;
};

// Unpacked here, once for every op and device, and checked against the tensors' shapes, so a wrong call fails with
// a message instead of reading out of bounds.
CouplingCall make_coupling_call(const char* op, const at::Tensor& x, const at::Tensor& h, const LayoutArgs& args);

// The backward's extra inputs, checked against the call: grad_y like x (any floating dtype), grad_logdet [B].
void check_backward_grads(const char* op, const CouplingCall& call, const at::Tensor& grad_y,
                          const at::Tensor& grad_logdet);

DType dtype_code(at::ScalarType type);

// Arithmetic and the log-det run in float64 for float64 x, else in float32 (also the log-det's dtype).
at::ScalarType compute_type(at::ScalarType x_type);

// A fresh output; NaN-filled when `poison` is set (nf_kernels.poison_outputs()), so an element a kernel forgets
// to write fails the comparison with the reference.
at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options, bool poison);

// What the forward op's glue shares across devices: the checked call and its allocated outputs. When `empty`
// (no sample or no element) the outputs are already final (the log-det zeroed) and nothing is to be launched.
struct ForwardOp {
  CouplingCall call;
  at::Tensor y;
  at::Tensor logdet;  // [B], in compute_type(x)
  bool empty = false;
};

ForwardOp prepare_forward(const char* op, const at::Tensor& x, const at::Tensor& h, const LayoutArgs& args,
                          bool poison);

// How the backward's glue hands grad_y to the kernels.
enum class GradYDType {
  kAsGiven,  // any floating dtype (the kernels read it through its own DType code)
  kLikeX,    // converted to x's dtype
};

// The same for the backward op: the checked call and grads, made contiguous (grad_logdet in compute_type(x),
// grad_y as `grad_y_dtype` says), and the allocated gradients. When `empty` the gradients are already final
// (zeroed) and grad_y/grad_logdet are left undefined.
struct BackwardOp {
  CouplingCall call;
  at::Tensor grad_y;
  at::Tensor grad_logdet;
  at::Tensor grad_x;
  at::Tensor grad_h;
  bool empty = false;
};

BackwardOp prepare_backward(const char* op, const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                            const at::Tensor& x, const at::Tensor& h, const LayoutArgs& args, bool poison,
                            GradYDType grad_y_dtype);

}  // namespace nf_kernels
