// nf_kernels_ext::mlp: the default vector conditioner (nf_kernels.flows.MLP: linear layers with a ReLU between
// them) as one autograd node. In a small coupling flow the conditioners' matrix products are short (B = 256 rows,
// 32-128 columns), and what an eager step spends around them (a module call per layer, an autograd node per addmm,
// transpose and ReLU, and the engine's walk between them) costs about as much as a product itself. Here the forward
// runs its products below autograd in one call and the backward is one C++ function.
//
// It computes exactly what the module stack computes, op for op (a widening layer's weight gradient as the same
// product transposed, weight_gradient below), so the two agree bitwise (tests/flows/
// test_fused_mlp.py): addmm(b, a, W^T) and relu forward (F.linear and F.relu); in backward the gradients
// autograd's own formulas give, g^T a for a weight, g summed to the bias's shape, g W for an input, and
// threshold_backward through each ReLU on its output. With create_graph=True the backward is recorded instead:
// the layers are rerun with autograd on from the saved input and parameters and differentiated through, so a second
// derivative works, as it does through the modules.
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "mlp.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

namespace nf_kernels {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_mlp_layers(const char* op, const at::Tensor& x, at::TensorList layers) {
  TORCH_CHECK_VALUE(!layers.empty() && layers.size() % 2 == 0, op,
                    ": layers must be [weight, bias] pairs, at least one, got ", layers.size(), " tensors");
  TORCH_CHECK_VALUE(x.dim() == 2, op, ": x must be [B, features], got shape ", x.sizes());
  int64_t width = x.size(1);
  for (size_t i = 0; i < layers.size(); i += 2) {
    const at::Tensor& weight = layers[i];
    const at::Tensor& bias = layers[i + 1];
    TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == width && bias.dim() == 1 && bias.size(0) == weight.size(0),
                      op, ": layer ", i / 2, " has weight ", weight.sizes(), " and bias ", bias.sizes(),
                      "; it needs weight [out, ", width, "] and bias [out]");
    width = weight.size(0);
  }
}

at::Tensor run_mlp_layers(const at::Tensor& x, at::TensorList layers, std::vector<at::Tensor>* inputs,
                          bool last_bias) {
  const size_t count = layers.size() / 2;
  at::Tensor a = x;
  for (size_t i = 0; i < count; ++i) {
    a = i + 1 < count || last_bias ? at::addmm(layers[2 * i + 1], a, layers[2 * i].t()) : at::mm(a, layers[2 * i].t());
    if (i + 1 < count) {
      a.relu_();  // in place on the product, which nothing else reads (addmm's backward does not): the same bits
      if (inputs) inputs->push_back(a);
    }
  }
  return a;
}

namespace {

// A layer's weight gradient, g^T a ([out, in]). Where the layer widens (out > in: the last layer of a wide coupling,
// [4096, 64] in a D=4096 RealNVP), it is computed as (a^T g)^T and copied contiguous: MKL runs that product faster
// (alone, cache-cold, [256, 4096] by [256, 64]: 1.06 ms against 1.60), and the copy of the 1 MB result costs less
// than it saves. In the D=4096 training step (4 couplings, 1 thread, AVX-512 Xeon), side by side in one
// process, 15 rounds, the step took 1.005x and 1.024x less time in two runs: small, and the same bits. Both products
// reduce over the batch in the same order, so the gradient is autograd's (tests/flows/test_fused_mlp.py compares with
// the modules bit for bit, at the widths too).
at::Tensor weight_gradient(const at::Tensor& g, const at::Tensor& input, const at::Tensor& weight) {
  if (weight.size(0) > weight.size(1)) return input.t().mm(g).t().contiguous();
  return g.t().mm(input);
}

}  // namespace

std::vector<at::Tensor> mlp_gradients(const std::vector<at::Tensor>& inputs, at::TensorList layers,
                                      const at::Tensor& grad, const std::function<bool(size_t)>& needs) {
  const size_t count = layers.size() / 2;
  std::vector<at::Tensor> grads(1 + layers.size());
  at::Tensor g = grad;
  for (size_t i = count; i-- > 0;) {
    const at::Tensor& input = inputs[i];
    const at::Tensor& weight = layers[2 * i];
    if (needs(1 + 2 * i)) grads[1 + 2 * i] = weight_gradient(g, input, weight);
    if (needs(2 + 2 * i)) grads[2 + 2 * i] = at::sum_to(g, at::IntArrayRef{weight.size(0)});
    if (i > 0) {
      // In place on the fresh product: the mask of the ReLU whose output `input` is, without another tensor.
      g = g.mm(weight);
      at::threshold_backward_out(g, g, input, 0);
    } else if (needs(0)) {
      grads[0] = g.mm(weight);
    }
  }
  return grads;
}

namespace {

struct Mlp : public torch::autograd::Function<Mlp> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList layers) {
    check_mlp_layers("nf_kernels_ext::mlp", x, layers);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const int64_t count = static_cast<int64_t>(layers.size() / 2);
    // Saved: the input of every layer (x, then each ReLU's output, which is also what its backward reads), then
    // the layers themselves (a recorded backward reruns them).
    variable_list saved{x};
    at::Tensor a = run_mlp_layers(x, layers, &saved);
    saved.insert(saved.end(), layers.begin(), layers.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["count"] = count;
    return {a};
  }

  // One entry per forward input: x, then W_1, b_1, ..., W_n, b_n (a list's tensors are inputs of their own); an
  // undefined one where that input needs no gradient.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const int64_t count = ctx->saved_data["count"].toInt();
    if (torch::autograd::GradMode::is_enabled()) return recorded_backward(ctx, saved, count, grads[0]);
    const variable_list inputs(saved.begin(), saved.begin() + count);
    const at::TensorList layers(saved.data() + count, saved.size() - count);
    return mlp_gradients(inputs, layers, grads[0], [&](size_t i) { return ctx->needs_input_grad(i); });
  }

  // create_graph=True: the layers rerun with autograd on (the saved input and layers are connected to their own
  // graphs) and differentiated through with the graph recorded.
  static variable_list recorded_backward(AutogradContext* ctx, const variable_list& saved, int64_t count,
                                         const at::Tensor& grad) {
    const variable_list layers(saved.begin() + count, saved.end());
    const at::Tensor out = run_mlp_layers(saved[0], layers, nullptr);
    variable_list wrt;
    std::vector<size_t> positions;
    for (size_t i = 0; i < 1 + layers.size(); ++i) {
      if (!ctx->needs_input_grad(i)) continue;
      wrt.push_back(i == 0 ? saved[0] : layers[i - 1]);
      positions.push_back(i);
    }
    variable_list grad_inputs(1 + layers.size());
    if (wrt.empty()) return grad_inputs;
    const variable_list found = torch::autograd::grad({out}, wrt, {grad}, /*retain_graph=*/true,
                                                      /*create_graph=*/true, /*allow_unused=*/true);
    for (size_t k = 0; k < positions.size(); ++k) grad_inputs[positions[k]] = found[k];
    return grad_inputs;
  }
};

at::Tensor mlp(const at::Tensor& x, at::TensorList layers) { return Mlp::apply(x, layers)[0]; }

}  // namespace
}  // namespace nf_kernels

// CompositeImplicitAutograd: one kernel for every device and dtype (its products are ATen's); the autograd node is
// the Function's.
TORCH_LIBRARY_IMPL(nf_kernels_ext, CompositeImplicitAutograd, m) { m.impl("mlp", &nf_kernels::mlp); }
