// nf_kernels_ext::mlp_coupling: a coupling layer whose conditioner is the ReLU MLP (nf_kernels.flows.MLP) on a
// contiguous run of x's features (mask "half" of a vector), as one autograd node.
//
// Run as two nodes (the MLP's, then the coupling's), autograd adds the gradient the conditioner sends to the kept
// features to the coupling's own gradient of x by way of a slice's backward: a zero tensor the size of x, the
// conditioner's gradient copied into it, then the two summed into a third tensor. In a D=4096 RealNVP step that is
// three passes over [B, D] per coupling for a sum that touches half of it. Here the coupling's backward kernel writes
// grad_x (the kept features' entries are grad_y's), and the conditioner's gradient is added in place into its kept
// half. The forward runs the MLP's layers and the coupling's kernel with no Python and no node in between.
//
// On the CPU, in float32 and float64, the conditioner's last bias is folded into the coupling: its last layer is the
// product alone and the kernels add the bias to h as they read it (the raw ops' h_bias). addmm(b, a, W^T) there
// writes b broadcast into its output before the product accumulates onto it, one more pass over [B, 2 D/2] a layer;
// in the profile of a D=4096 RealNVP step that pass (copy_) took about 0.5 ms a coupling. The bias's gradient is
// grad_h summed over the batch, as before.
//
// The values are the two nodes' bit for bit: the same products (mlp.h), the same kernels with the same arguments
// (coupling_autograd.h), and each kept entry of grad_x the same single sum grad_y + conditioner gradient (a sum with
// the slice's zero changes nothing but a zero's sign). The folded bias keeps that where the BLAS rounds
// addmm(b, a, W^T) as mm(a, W^T) + b, once (MKL here: float32 up to 256 hidden features, float64 up to 128;
// tests/flows/test_fused_coupling_layer.py); elsewhere h differs by that one rounding. With create_graph=True the
// backward is recorded: the conditioner is rerun with autograd on, and the coupling's gradient is the node that
// refuses a second derivative, as through the two nodes.
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "coupling_autograd.h"
#include "mlp.h"

namespace nf_kernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr const char* kOp = "nf_kernels_ext::mlp_coupling";

// Whether the coupling's kernels add the MLP's last bias (see the file's comment): the CPU's, in float32 or float64.
// In float16 and bfloat16 the product would round before the bias is added, where addmm rounds after.
bool folds_last_bias(const at::Tensor& x, at::TensorList layers) {
  const at::ScalarType type = layers.back().scalar_type();
  return x.device().is_cpu() && (type == at::kFloat || type == at::kDouble);
}

// The layer's gradients at (x, h), below autograd: grad_x from the coupling's backward kernel with the
// conditioner's share added in place into the kept features (when needs(0)), and the MLP's gradients, entry 1 + k
// for layers[k] where needs(1 + k). `inputs` are the MLP's layer inputs: the kept features, then each hidden one.
std::pair<at::Tensor, std::vector<at::Tensor>> layer_gradients(const at::Tensor& grad_y, const at::Tensor& grad_logdet,
                                                               const at::Tensor& x, const at::Tensor& h,
                                                               const CouplingLayoutArgs& args,
                                                               const std::vector<at::Tensor>& inputs,
                                                               at::TensorList layers, int64_t kept_start,
                                                               int64_t kept_count,
                                                               const std::function<bool(size_t)>& needs) {
  auto [grad_x, grad_h] = coupling_gradients(grad_y, grad_logdet, x, h, args, /*record=*/false);
  std::vector<at::Tensor> grads = mlp_gradients(inputs, layers, grad_h, needs);
  if (grads[0].defined()) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    grad_x.narrow(1, kept_start, kept_count).add_(grads[0]);  // grad_x is the kernel's fresh tensor
  }
  return {grad_x, std::move(grads)};
}

struct MlpCoupling : public torch::autograd::Function<MlpCoupling> {
  // Inputs: x [B, D], the MLP's layers, and the kept features x[:, kept_start : kept_start + kept_count], which
  // the conditioner reads; then the coupling's layout arguments (no compact h: a half mask has none).
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList layers, int64_t kept_start,
                               int64_t kept_count, const OptionalTensor& transformed, at::IntArrayRef layout,
                               double clamp, double clamp_low, bool poison) {
    TORCH_CHECK_VALUE(x.dim() == 2 && kept_start >= 0 && kept_count >= 1 && kept_start + kept_count <= x.size(1),
                      kOp, ": the kept features [", kept_start, ", ", kept_start + kept_count,
                      ") must lie in x's features, x of shape ", x.sizes());
    const at::Tensor kept = x.narrow(1, kept_start, kept_count);
    check_mlp_layers(kOp, kept, layers);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // Saved: x, h, the MLP's hidden activations (its layers' inputs after the first), its layers, the mask.
    // h is the last layer's product without its bias where the kernels add it (`fold`).
    std::vector<at::Tensor> hidden;
    const bool fold = folds_last_bias(x, layers);
    const at::Tensor h = run_mlp_layers(kept, layers, &hidden, /*last_bias=*/!fold);
    CouplingLayoutArgs args{transformed, layout.vec(), clamp, clamp_low, std::nullopt, poison};
    if (fold) args.h_bias = layers.back();
    auto [y, logdet] = raw_coupling_forward(x, h, args);
    variable_list saved{x, h, transformed.value_or(at::Tensor())};
    saved.insert(saved.end(), hidden.begin(), hidden.end());
    saved.insert(saved.end(), layers.begin(), layers.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["count"] = static_cast<int64_t>(layers.size() / 2);
    ctx->saved_data["kept_start"] = kept_start;
    ctx->saved_data["kept_count"] = kept_count;
    save_layout_args(ctx, args);
    return {y, logdet};
  }

  // One entry per forward input: x, then W_1, b_1, ..., W_n, b_n, then nothing for the rest. `grads` are
  // materialized: an output that got no gradient arrives as zeros.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const int64_t count = ctx->saved_data["count"].toInt();
    const int64_t kept_start = ctx->saved_data["kept_start"].toInt();
    const int64_t kept_count = ctx->saved_data["kept_count"].toInt();
    const at::Tensor& x = saved[0];
    const at::Tensor& h = saved[1];
    CouplingLayoutArgs args = saved_layout_args(ctx, saved[2], at::Tensor());
    const variable_list layers(saved.begin() + 2 + count, saved.end());
    const size_t entries = 1 + layers.size() + 7;
    if (torch::autograd::GradMode::is_enabled())
      return recorded_backward(ctx, x, layers, kept_start, kept_count, args, grads, entries);
    if (folds_last_bias(x, layers)) args.h_bias = layers.back();  // as the forward folded it: h is the product alone

    std::vector<at::Tensor> inputs{x.narrow(1, kept_start, kept_count)};
    inputs.insert(inputs.end(), saved.begin() + 3, saved.begin() + 2 + count);
    auto [grad_x, mlp_grads] = layer_gradients(grads[0], grads[1], x, h, args, inputs, layers, kept_start, kept_count,
                                               [&](size_t i) { return ctx->needs_input_grad(i); });
    variable_list grad_inputs(entries);
    if (ctx->needs_input_grad(0)) grad_inputs[0] = grad_x;
    for (size_t i = 1; i < mlp_grads.size(); ++i) grad_inputs[i] = mlp_grads[i];
    return grad_inputs;
  }

  // create_graph=True: the conditioner reruns with autograd on from the saved x and layers (connected to their own
  // graphs), its whole last layer included (no bias folded), the coupling's gradient is recorded as its own node, and
  // the conditioner's share of grad_x is added out of place, so every step is differentiable as far as the two
  // nodes' would be.
  static variable_list recorded_backward(AutogradContext* ctx, const at::Tensor& x, const variable_list& layers,
                                         int64_t kept_start, int64_t kept_count, const CouplingLayoutArgs& args,
                                         const variable_list& grads, size_t entries) {
    const at::Tensor kept = x.narrow(1, kept_start, kept_count);
    const at::Tensor h = run_mlp_layers(kept, layers, nullptr);
    auto [grad_x, grad_h] = coupling_gradients(grads[0], grads[1], x, h, args, /*record=*/true);
    variable_list wrt;
    std::vector<size_t> positions;
    for (size_t i = 0; i < 1 + layers.size(); ++i) {
      if (!ctx->needs_input_grad(i)) continue;
      wrt.push_back(i == 0 ? kept : layers[i - 1]);
      positions.push_back(i);
    }
    variable_list grad_inputs(entries);
    if (wrt.empty()) return grad_inputs;
    const variable_list found = torch::autograd::grad({h}, wrt, {grad_h}, /*retain_graph=*/true,
                                                      /*create_graph=*/true, /*allow_unused=*/true);
    for (size_t k = 0; k < positions.size(); ++k) grad_inputs[positions[k]] = found[k];
    if (ctx->needs_input_grad(0)) {
      const at::Tensor& grad_kept = grad_inputs[0];
      grad_inputs[0] = grad_kept.defined()
                           ? grad_x.slice_scatter(grad_x.narrow(1, kept_start, kept_count) + grad_kept, 1, kept_start,
                                                  kept_start + kept_count)
                           : grad_x;
    }
    return grad_inputs;
  }
};

std::tuple<at::Tensor, at::Tensor> mlp_coupling(const at::Tensor& x, at::TensorList layers, int64_t kept_start,
                                                int64_t kept_count, const OptionalTensor& transformed,
                                                at::IntArrayRef layout, double clamp, double clamp_low, bool poison) {
  variable_list outputs =
      MlpCoupling::apply(x, layers, kept_start, kept_count, transformed, layout, clamp, clamp_low, poison);
  return {outputs[0], outputs[1]};
}

// The step of a backward that rebuilt what the forward did not keep, through the same layer, outside any graph:
// memory-saving backprop's (nf_kernels/flows/memory_saving.py), given the layer's output, and a recomputed
// conditioner's, given its input. With `inverse_layout` (the reverse coupling's), `input` is the output y and x is
// rebuilt by the coupling's inverse on h of the kept features, which y and x share; without it, `input` is x. Returns
// x, grad_x and the gradients of the layers flagged in layer_needs_grad, in order. One conditioner forward feeds the
// inverse and the backward, as in the layer's Python steps, which this replaces in plain eager calls: there each
// layer cost a rebuilt graph, an autograd.grad call and its Python.
std::tuple<at::Tensor, at::Tensor, std::vector<at::Tensor>> mlp_coupling_rebuilt_backward(
    const at::Tensor& input, const at::Tensor& grad_y, const at::Tensor& grad_logdet, at::TensorList layers,
    at::IntArrayRef layer_needs_grad, int64_t kept_start, int64_t kept_count, const OptionalTensor& transformed,
    at::IntArrayRef layout, at::OptionalIntArrayRef inverse_layout, double clamp, double clamp_low, bool poison) {
  constexpr const char* op = "nf_kernels_ext::mlp_coupling_rebuilt_backward";
  TORCH_CHECK_VALUE(input.dim() == 2 && kept_start >= 0 && kept_count >= 1 && kept_start + kept_count <= input.size(1),
                    op, ": the kept features [", kept_start, ", ", kept_start + kept_count,
                    ") must lie in the input's features, input of shape ", input.sizes());
  TORCH_CHECK_VALUE(layer_needs_grad.size() == layers.size(), op,
                    ": layer_needs_grad needs one entry a layer tensor, got ", layer_needs_grad.size(), " for ",
                    layers.size());
  const at::Tensor kept = input.narrow(1, kept_start, kept_count);
  check_mlp_layers(op, kept, layers);
  at::NoGradGuard no_grad;
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  std::vector<at::Tensor> inputs{kept};
  const bool fold = folds_last_bias(input, layers);  // as the forward node folds it
  const at::Tensor h = run_mlp_layers(kept, layers, &inputs, /*last_bias=*/!fold);
  const OptionalTensor h_bias = fold ? OptionalTensor(layers.back()) : std::nullopt;
  const at::Tensor x =
      inverse_layout.has_value()
          ? std::get<0>(raw_coupling_forward(
                input, h, {transformed, inverse_layout->vec(), clamp, clamp_low, std::nullopt, poison, h_bias}))
          : input;
  // The kept features' share of grad_x is always needed (entry 0), layers[k]'s gradient where flagged.
  auto [grad_x, grads] = layer_gradients(
      grad_y, grad_logdet, x, h, {transformed, layout.vec(), clamp, clamp_low, std::nullopt, poison, h_bias}, inputs,
      layers, kept_start, kept_count, [&](size_t i) { return i == 0 || layer_needs_grad[i - 1] != 0; });
  std::vector<at::Tensor> layer_grads;
  for (size_t k = 0; k < layers.size(); ++k)
    if (layer_needs_grad[k]) layer_grads.push_back(grads[1 + k]);
  return {x, grad_x, layer_grads};
}

}  // namespace
}  // namespace nf_kernels

// CompositeImplicitAutograd: one kernel for every device (the products are ATen's, the raw coupling ops pick the
// device's kernels); the autograd node is the Function's. The rebuilt backward's step records nothing.
TORCH_LIBRARY_IMPL(nf_kernels_ext, CompositeImplicitAutograd, m) {
  m.impl("mlp_coupling", &nf_kernels::mlp_coupling);
  m.impl("mlp_coupling_rebuilt_backward", &nf_kernels::mlp_coupling_rebuilt_backward);
}
