// The coupling's two raw ops (coupling_forward, coupling_backward) as the autograd nodes of the extension call them:
// nf_kernels_ext::coupling (autograd.cpp) and nf_kernels_ext::mlp_coupling (mlp_coupling.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <tuple>
#include <vector>

namespace nf_kernels {

using TensorPair = std::tuple<at::Tensor, at::Tensor>;
using OptionalTensor = std::optional<at::Tensor>;

// The layout arguments both raw ops take after their tensors (csrc/ops/schema.cpp's NF_LAYOUT_ARGS).
struct CouplingLayoutArgs {
  OptionalTensor transformed;
  std::vector<int64_t> layout;
  double clamp;
  double clamp_low;
  OptionalTensor h_index;
  bool poison;
  // The raw ops' bias on h (schema.cpp's NF_RAW_ARGS): the CPU kernels add it to h as they read it. Not saved by
  // save_layout_args; a node that passes one keeps it with its tensors.
  OptionalTensor h_bias = std::nullopt;
};

inline OptionalTensor defined_or_none(const at::Tensor& t) { return t.defined() ? OptionalTensor(t) : std::nullopt; }

// A node keeps a call's layout arguments in ctx->saved_data and reads them back in its backward; the tensors among
// them (transformed, h_index) it saves with its other tensors and passes back here.
void save_layout_args(torch::autograd::AutogradContext* ctx, const CouplingLayoutArgs& args);
CouplingLayoutArgs saved_layout_args(torch::autograd::AutogradContext* ctx, const at::Tensor& transformed,
                                     const at::Tensor& h_index);

// (y, logdet), below autograd: straight to the device's kernel.
TensorPair raw_coupling_forward(const at::Tensor& x, const at::Tensor& h, const CouplingLayoutArgs& args);

// (grad_x, grad_h). Below autograd unless `record` (a backward run with create_graph=True): then the gradient is a
// node of its own, whose backward, a second derivative, refuses with the custom op's message.
TensorPair coupling_gradients(const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
                              const at::Tensor& h, const CouplingLayoutArgs& args, bool record);

}  // namespace nf_kernels
