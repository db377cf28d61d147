// The ReLU MLP's forward and hand-written backward (nf_kernels.flows.MLP: linear layers with a ReLU between them),
// shared by the nodes that run one: nf_kernels_ext::mlp (mlp.cpp) and nf_kernels_ext::mlp_coupling
// (mlp_coupling.cpp, the conditioner and its coupling as one node). They compute what the modules compute, op for
// op: addmm(b, a, W^T) and relu forward; in backward the formulas autograd's own derivatives give.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace nf_kernels {

// layers = [W_1, b_1, ..., W_n, b_n]: W_i of shape [out_i, in_i], b_i of shape [out_i], in_1 = x.size(1). `op`
// names the op in the error.
void check_mlp_layers(const char* op, const at::Tensor& x, at::TensorList layers);

// The stack's output from x; `inputs`, when given, gets the input of each layer after the first (each ReLU's
// output, which its backward reads too). Called below autograd it records nothing; with autograd on, everything.
// Without `last_bias`, the last layer is the product alone, mm(a, W_n^T), and b_n is the caller's to add.
at::Tensor run_mlp_layers(const at::Tensor& x, at::TensorList layers, std::vector<at::Tensor>* inputs,
                          bool last_bias = true);

// Gradients from the output's gradient `grad`, below autograd: entry 0 for x, entry 1 + k for layers[k], undefined
// where `needs(entry)` is false. `inputs` holds every layer's input: x, then each hidden activation.
std::vector<at::Tensor> mlp_gradients(const std::vector<at::Tensor>& inputs, at::TensorList layers,
                                      const at::Tensor& grad, const std::function<bool(size_t)>& needs);

}  // namespace nf_kernels
