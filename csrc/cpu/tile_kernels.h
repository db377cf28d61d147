// The CPU kernels' torch-free interface: one function call computes one tile (a run of elements of one sample).
//
// The torch glue (ops_cpu.cpp) cuts the batch into tiles, runs them with at::parallel_for and adds the tiles'
// log-det partial sums pairwise (pairwise_sum.h), in a fixed order. Tile boundaries depend only on the shapes,
// so the log-det is the same bits whatever the thread count. The tile code is compiled once per instruction set
// (AVX-512, AVX2, baseline; tile_kernels_*.cpp) and the best one this CPU runs is picked at load time.
#pragma once

#include <cstdint>

#include "../coupling_layout.h"

namespace nf_kernels {
namespace cpu {

// Elements per tile: the unit of parallel work and of the log-det's fixed summation order.
constexpr int64_t kTileElements = 16384;

struct ForwardTensors {
  const void* x;
  DType x_dtype;
  const void* h;
  DType h_dtype;
  void* y;  // x_dtype, shape of x
  const void* h_bias = nullptr;  // h_dtype, [h_stride], added to each sample's h as it is read; runs of h only
};

struct BackwardTensors {
  const void* grad_y;
  DType grad_y_dtype;
  const void* grad_logdet;  // [B], the compute type: double if x is float64, else float
  const void* x;
  DType x_dtype;
  const void* h;
  DType h_dtype;
  void* grad_x;  // x_dtype
  void* grad_h;  // h_dtype, shape of h
  const void* h_bias = nullptr;  // as ForwardTensors' (grad_h is the gradient of h + h_bias, the same)
};

struct TileKernels {
  const char* isa;  // "avx512", "avx2" or "baseline"
  // Writes y[b, start:end) and returns the sum of the log-scales of the transformed elements there (the sign
  // of the direction applied; 0 for additive couplings).
  double (*forward_tile)(const FlatLayout&, const CouplingConfig&, const ForwardTensors&, int64_t b,
                         int64_t start, int64_t end);
  // Writes grad_x[b, start:end) and the part of grad_h[b] that belongs to those elements.
  void (*backward_tile)(const FlatLayout&, const CouplingConfig&, const BackwardTensors&, int64_t b,
                        int64_t start, int64_t end);
};

// One table per instruction set; nullptr where this compiler or platform cannot build that variant.
const TileKernels* avx512_tile_kernels();
const TileKernels* avx2_tile_kernels();
const TileKernels* baseline_tile_kernels();

// The variant used by the ops: the best this CPU supports, capped by NF_KERNELS_CPU_ISA=baseline|avx2|avx512
// if set (tests use it to check every variant). Chosen once.
const TileKernels& selected_tile_kernels();

}  // namespace cpu
}  // namespace nf_kernels
