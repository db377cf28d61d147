// The nf_kernels_ext op schemas, defined once; the CPU and CUDA kernels register against them in their own
// files. coupling_forward and coupling_backward are the raw kernels: the Python custom op (nf_kernels/_ops.py)
// calls them below its own autograd, and called directly with inputs that require grad they say so instead of
// returning wrong gradients. `coupling` is the eager path's differentiable op, the raw ops behind a C++ autograd
// node (csrc/ops/autograd.cpp); `mlp` the default MLP conditioner's (csrc/ops/mlp.cpp).
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <iterator>
#include <string>
#include <vector>

#include <c10/util/Exception.h>

#include "../coupling_layout.h"
#include "../cpu/tile_kernels.h"
#include "../spline_layout.h"

namespace {

std::string cpu_isa() { return nf_kernels::cpu::selected_tile_kernels().isa; }

// The names of the kernel interface's codes, in code order: "scale", "pattern" or "layout" (the fields of the
// packed `layout` argument), "spline_layout" (the spline ops' fields); "spline_max_bins" is the most bins the spline
// kernels take. nf_kernels/_layout.py holds the same lists; tests/test_extension.py compares them.
std::vector<std::string> kernel_codes(const std::string& kind) {
  if (kind == "scale") return {std::begin(nf_kernels::kScaleNames), std::end(nf_kernels::kScaleNames)};
  if (kind == "pattern") return {std::begin(nf_kernels::kPatternNames), std::end(nf_kernels::kPatternNames)};
  if (kind == "layout") return {std::begin(nf_kernels::kLayoutFieldNames), std::end(nf_kernels::kLayoutFieldNames)};
  if (kind == "spline_layout")
    return {std::begin(nf_kernels::kSplineLayoutFieldNames), std::end(nf_kernels::kSplineLayoutFieldNames)};
  if (kind == "spline_max_bins") return {std::to_string(nf_kernels::kMaxSplineBins)};
  TORCH_CHECK_VALUE(false, "kernel_codes: kind must be 'scale', 'pattern', 'layout', 'spline_layout' or ",
                    "'spline_max_bins', got '", kind, "'");
}

}  // namespace

// `layout` is nf_kernels._layout.FlatLayout.packed(): the ints of kLayoutFieldNames, in that order. `clamp_low` is the
// lower bound of "clip" (clamp the upper), `h_index` a compact h's table of positions (pattern "gather"): int32, one
// entry per element of a sample. `poison` fills the outputs with NaN before the kernels write them (tests).
#define NF_LAYOUT_ARGS \
  "Tensor? transformed, int[] layout, float clamp, float clamp_low=0., Tensor? h_index=None, bool poison=False"
// The raw ops also take `h_bias`, one value per parameter of a sample's h ([h_stride], h's dtype and device), which
// the kernels add to h as they read it: the conditioner's last bias, folded into the coupling instead of broadcast
// into h by its product (nf_kernels_ext::mlp_coupling on the CPU). CPU kernels only, and only where a sample's
// parameters are runs of h (the half mask and the other contiguous spans, [s_raw, t] or [t, s_raw]).
#define NF_RAW_ARGS NF_LAYOUT_ARGS ", Tensor? h_bias=None"
// The spline ops' `layout` is nf_kernels._layout's spline layout packed (kSplineLayoutFieldNames, spline_layout.h).
#define NF_SPLINE_ARGS                                                                                        \
  "Tensor? transformed, int[] layout, float bound, float min_bin_width, float min_bin_height, float min_derivative, " \
  "bool poison=False"

TORCH_LIBRARY(nf_kernels_ext, m) {
  m.def("coupling_forward(Tensor x, Tensor h, " NF_RAW_ARGS ") -> (Tensor y, Tensor logdet)");
  m.def("coupling(Tensor x, Tensor h, " NF_LAYOUT_ARGS ") -> (Tensor y, Tensor logdet)");
  m.def("coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor h, " NF_RAW_ARGS
        ") -> (Tensor grad_x, Tensor grad_h)");
  m.def("spline_forward(Tensor x, Tensor params, " NF_SPLINE_ARGS ") -> (Tensor y, Tensor logdet)");
  m.def("spline_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor params, " NF_SPLINE_ARGS
        ") -> (Tensor grad_x, Tensor grad_params)");
  // The default vector conditioner (linear layers, ReLU between them) as one autograd node: layers = [W_1, b_1, ...,
  // W_n, b_n] (csrc/ops/mlp.cpp).
  m.def("mlp(Tensor x, Tensor[] layers) -> Tensor");
  // A coupling layer whose conditioner is that MLP on the features [kept_start, kept_start + kept_count) of a vector
  // x, as one autograd node (csrc/ops/mlp_coupling.cpp): the layout arguments are coupling_forward's.
  m.def("mlp_coupling(Tensor x, Tensor[] layers, int kept_start, int kept_count, Tensor? transformed, int[] layout, "
        "float clamp, float clamp_low=0., bool poison=False) -> (Tensor y, Tensor logdet)");
  // A rebuilt backward's step through that layer (memory-saving backprop's from its output, with the reverse
  // coupling's `inverse_layout`; a recomputed conditioner's from its input, without): (x, grad_x, the gradients of
  // the layers flagged in layer_needs_grad).
  m.def("mlp_coupling_rebuilt_backward(Tensor input, Tensor grad_y, Tensor grad_logdet, Tensor[] layers, "
        "int[] layer_needs_grad, int kept_start, int kept_count, Tensor? transformed, int[] layout, "
        "int[]? inverse_layout, float clamp, float clamp_low=0., bool poison=False) -> (Tensor x, Tensor grad_x, "
        "Tensor[] layer_grads)");
  // Which instruction set the CPU kernels use here ("avx512", "avx2" or "baseline").
  m.def("cpu_isa() -> str", &cpu_isa);
  m.def("kernel_codes(str kind) -> str[]", &kernel_codes);
}

TORCH_LIBRARY_IMPL(nf_kernels_ext, Autograd, m) {
  m.impl("coupling_forward", torch::autograd::autogradNotImplementedFallback());
  m.impl("coupling_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("spline_forward", torch::autograd::autogradNotImplementedFallback());
  m.impl("spline_backward", torch::autograd::autogradNotImplementedFallback());
}
