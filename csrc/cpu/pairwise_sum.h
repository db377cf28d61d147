// The log-det's summation order on the CPU, at both of its levels: a tile's terms (tile_kernels_impl.h) and a
// sample's tile sums (ops_cpu.cpp).
//
// Pairwise: the rounding error of a sum of n terms grows with log2(n) instead of n. The log-det's terms can
// cancel (SPEC section 3 bounds its error by sum_k |a_k|, not by |logdet|), and then that error is all there is.
// The order depends on the count alone, never on the vector width or the thread count, so the result is the
// same bits on every instruction set and any number of threads.
#pragma once

#include <cstdint>

namespace nf_kernels {
namespace cpu {
namespace {  // internal linkage: one copy per instruction-set translation unit (see isa_target.h)

// The sum of values[0, count), which it overwrites: the upper half is added onto the lower half until one value
// is left. Each level is one loop that the compiler vectorizes.
template <class T>
T pairwise_sum(T* values, int64_t count) {
  if (count <= 0) return T(0);
  while (count > 1) {
    const int64_t half = (count + 1) / 2;
    T* __restrict__ lower = values;
    const T* __restrict__ upper = values + half;  // [half, count) never overlaps [0, count - half)
    for (int64_t k = 0; k < count - half; ++k) lower[k] += upper[k];
    count = half;
  }
  return values[0];
}

}  // namespace
}  // namespace cpu
}  // namespace nf_kernels
