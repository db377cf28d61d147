// The nf_kernels_ext op schemas, defined once; the CPU and CUDA kernels register against them in their own
// files. The Python op layer (nf_kernels/_ops.py) owns autograd for the public op and calls these below
// autograd; called directly with inputs that require grad, they say so instead of returning wrong gradients.
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "../cpu/tile_kernels.h"

namespace {

std::string cpu_isa() { return nf_kernels::cpu::selected_tile_kernels().isa; }

}  // namespace

// The layout ints are nf_kernels._layout.FlatLayout's fields. `poison` fills outputs with NaN first (tests).
#define NF_LAYOUT_ARGS                                                                                   \
  "Tensor? transformed, int lo, int hi, int h_stride, int t_offset, int pattern, int parity, int width, " \
  "int plane, int scale, float clamp, bool shift_first, bool reverse, bool poison=False"

TORCH_LIBRARY(nf_kernels_ext, m) {
  m.def("coupling_forward(Tensor x, Tensor h, " NF_LAYOUT_ARGS ") -> (Tensor y, Tensor logdet)");
  m.def("coupling_backward(Tensor grad_y, Tensor grad_logdet, Tensor x, Tensor h, " NF_LAYOUT_ARGS
        ") -> (Tensor grad_x, Tensor grad_h)");
  // Which instruction set the CPU kernels use here ("avx512", "avx2" or "baseline").
  m.def("cpu_isa() -> str", &cpu_isa);
}

TORCH_LIBRARY_IMPL(nf_kernels_ext, Autograd, m) {
  m.impl("coupling_forward", torch::autograd::autogradNotImplementedFallback());
  m.impl("coupling_backward", torch::autograd::autogradNotImplementedFallback());
}
