// How the CPU glue cuts a batch into tiles (runs of at most kTileElements elements of one sample), runs them on
// at::parallel_for, and adds each sample's tile partial sums of the log-det pairwise in tile order, so the
// result does not depend on the thread count. Shared by the affine (ops_cpu.cpp) and spline (spline_ops_cpu.cpp)
// glue.
#pragma once

#include <algorithm>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include "pairwise_sum.h"
#include "tile_kernels.h"

namespace nf_kernels {
namespace cpu {
namespace {

// Below this many elements a parallel task is not worth its start-up cost.
constexpr int64_t kMinElementsPerTask = 32768;

struct Tiling {
  int64_t numel;       // elements a sample
  int64_t per_sample;  // tiles in one sample
  int64_t count;       // tiles in the batch
  int64_t grain;       // tiles per parallel task, at least

  Tiling(int64_t batch, int64_t numel_, int64_t min_elements_per_task = kMinElementsPerTask)
      : numel(numel_),
        per_sample((numel_ + kTileElements - 1) / kTileElements),
        count(batch * per_sample),
        grain(std::max<int64_t>(1, min_elements_per_task / std::max<int64_t>(1, std::min(numel_, kTileElements)))) {}

  int64_t start(int64_t tile) const { return (tile % per_sample) * kTileElements; }
};

// body(tile, sample, start, end) for every tile, in parallel.
template <class Body>
void for_each_tile(const Tiling& tiling, const Body& body) {
  at::parallel_for(0, tiling.count, tiling.grain, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t start = tiling.start(tile);
      body(tile, tile / tiling.per_sample, start, std::min(tiling.numel, start + kTileElements));
    }
  });
}

// logdet[b] = the pairwise sum of sample b's tile partials (which it overwrites), in logdet's dtype (float or
// double).
inline void sum_partials(std::vector<double>& partials, int64_t per_sample, at::Tensor& logdet) {
  auto sum_into = [&](auto* out) {
    using T = std::remove_pointer_t<decltype(out)>;
    for (int64_t b = 0; b < logdet.numel(); ++b)
      out[b] = static_cast<T>(pairwise_sum(partials.data() + b * per_sample, per_sample));
  };
  if (logdet.scalar_type() == at::kDouble)
    sum_into(logdet.mutable_data_ptr<double>());
  else
    sum_into(logdet.mutable_data_ptr<float>());
}

}  // namespace
}  // namespace cpu
}  // namespace nf_kernels
