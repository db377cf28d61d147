// nf_kernels_ext::coupling: the eager path's differentiable op. The fused forward kernel with a C++ autograd node
// whose backward is the fused backward kernel, so an eager call reaches the kernel in one dispatcher call and
// backward never enters Python. It runs the same raw ops (coupling_forward / coupling_backward) with the same
// arguments as the Python custom op nf_kernels::coupling (nf_kernels/_ops.py), which stays the path under
// torch.compile, tracing and fake tensors: the two agree bitwise.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <optional>
#include <tuple>
#include <vector>

#include "coupling_autograd.h"

namespace nf_kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSignature = TensorPair(const at::Tensor&, const at::Tensor&, const OptionalTensor&, at::IntArrayRef,
                                    double, double, const OptionalTensor&, bool, const OptionalTensor&);
using BackwardSignature = TensorPair(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const OptionalTensor&, at::IntArrayRef, double, double, const OptionalTensor&,
                                     bool, const OptionalTensor&);

// The raw ops, looked up once; called below autograd, they go straight to the device's kernel.
const c10::TypedOperatorHandle<ForwardSignature>& raw_forward() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("nf_kernels_ext::coupling_forward", "").typed<ForwardSignature>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSignature>& raw_backward() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("nf_kernels_ext::coupling_backward", "")
                             .typed<BackwardSignature>();
  return op;
}

TensorPair raw_coupling_backward(const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
                                 const at::Tensor& h, const CouplingLayoutArgs& a) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return raw_backward().call(grad_y, grad_logdet, x, h, a.transformed, a.layout, a.clamp, a.clamp_low, a.h_index,
                             a.poison, a.h_bias);
}

// The gradient as a node of its own, only when the backward itself is recorded (create_graph=True): its
// backward, a second derivative, is not implemented, and says so (the custom op path's message).
struct CouplingGradient : public torch::autograd::Function<CouplingGradient> {
  static variable_list forward(AutogradContext*, const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                               const at::Tensor& x, const at::Tensor& h, const OptionalTensor& transformed,
                               at::IntArrayRef layout, double clamp, double clamp_low, const OptionalTensor& h_index,
                               bool poison) {
    auto [grad_x, grad_h] = raw_coupling_backward(grad_y, grad_logdet, x, h,
                                                  {transformed, layout.vec(), clamp, clamp_low, h_index, poison});
    return {grad_x, grad_h};
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "nf_kernels coupling ops support first-order gradients only; double backward (for example "
                "autograd.grad(..., create_graph=True) followed by another backward) is not implemented");
  }
};

struct Coupling : public torch::autograd::Function<Coupling> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& h,
                               const OptionalTensor& transformed, at::IntArrayRef layout, double clamp,
                               double clamp_low, const OptionalTensor& h_index, bool poison) {
    const CouplingLayoutArgs args{transformed, layout.vec(), clamp, clamp_low, h_index, poison};
    auto [y, logdet] = raw_coupling_forward(x, h, args);
    // x and h as given (the custom op saves the same): the raw backward makes its own contiguous copies.
    ctx->save_for_backward({x, h, transformed.value_or(at::Tensor()), h_index.value_or(at::Tensor())});
    save_layout_args(ctx, args);
    return {y, logdet};
  }

  // `grads` are materialized: an output that got no gradient arrives as zeros, as the custom op path makes them.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const CouplingLayoutArgs args = saved_layout_args(ctx, saved[2], saved[3]);
    auto [grad_x, grad_h] = coupling_gradients(grads[0], grads[1], saved[0], saved[1], args,
                                               torch::autograd::GradMode::is_enabled());
    // One entry per forward argument: x, h, then nothing for transformed, layout, clamp, clamp_low, h_index, poison.
    return {grad_x, grad_h, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

TensorPair coupling(const at::Tensor& x, const at::Tensor& h, const OptionalTensor& transformed,
                    at::IntArrayRef layout, double clamp, double clamp_low, const OptionalTensor& h_index, bool poison) {
  variable_list outputs = Coupling::apply(x, h, transformed, layout, clamp, clamp_low, h_index, poison);
  return {outputs[0], outputs[1]};
}

}  // namespace

void save_layout_args(AutogradContext* ctx, const CouplingLayoutArgs& args) {
  ctx->saved_data["layout"] = args.layout;
  ctx->saved_data["clamp"] = args.clamp;
  ctx->saved_data["clamp_low"] = args.clamp_low;
  // Poisoning is decided by the forward call (nf_kernels.poison_outputs() around it) for both kernels.
  ctx->saved_data["poison"] = args.poison;
}

CouplingLayoutArgs saved_layout_args(AutogradContext* ctx, const at::Tensor& transformed, const at::Tensor& h_index) {
  return {defined_or_none(transformed),        ctx->saved_data["layout"].toIntVector(),
          ctx->saved_data["clamp"].toDouble(), ctx->saved_data["clamp_low"].toDouble(),
          defined_or_none(h_index),            ctx->saved_data["poison"].toBool()};
}

TensorPair raw_coupling_forward(const at::Tensor& x, const at::Tensor& h, const CouplingLayoutArgs& a) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return raw_forward().call(x, h, a.transformed, a.layout, a.clamp, a.clamp_low, a.h_index, a.poison, a.h_bias);
}

TensorPair coupling_gradients(const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
                              const at::Tensor& h, const CouplingLayoutArgs& args, bool record) {
  if (!record) return raw_coupling_backward(grad_y, grad_logdet, x, h, args);
  TORCH_CHECK(!args.h_bias.has_value(), "coupling_gradients: a recorded gradient takes h with its bias added");
  variable_list grads = CouplingGradient::apply(grad_y, grad_logdet, x, h, args.transformed, args.layout, args.clamp,
                                                args.clamp_low, args.h_index, args.poison);
  return {grads[0], grads[1]};
}

}  // namespace nf_kernels

// CompositeImplicitAutograd: one kernel for every device and for calls with and without grad; the autograd node
// is the Function's. (The raw ops below it pick the device's kernels.)
TORCH_LIBRARY_IMPL(nf_kernels_ext, CompositeImplicitAutograd, m) { m.impl("coupling", &nf_kernels::coupling); }
