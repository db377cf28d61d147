// The flat description of a spline coupling that the CPU and CUDA spline kernels work from (mirrors
// SPLINE_LAYOUT_FIELDS of nf_kernels/_layout.py, docs/spec.md's spline section).
//
// Elements are selected exactly as for the affine op (coupling_layout.h's FlatLayout: the range [lo, hi) and the
// pattern); what differs is where an element's parameters sit. Each transformed element has P = 3K - 1 of them
// (K = bins): for flat element n of [lo, hi), local = n - lo in channels of R = `inner` elements, parameter j at
//   params[b * params_stride + (local / R) * (P * R) + j * R + local % R],
// the nflows convention (params viewed as [B, C_t, P, H, W], or [B, D_t, P] for vectors).
//
// Torch-free and usable from C++ and CUDA.
#pragma once

#include <cstdint>

#include "coupling_layout.h"

namespace nf_kernels {

// The ops' packed `int[] layout` argument holds these fields in this order; nf_kernels/_layout.py's
// SPLINE_LAYOUT_FIELDS is the same list (the extension exports it as kernel_codes("spline_layout"), a test compares).
enum SplineLayoutField : int {
  kSplineFieldLo = 0, kSplineFieldHi, kSplineFieldParamsStride, kSplineFieldInner, kSplineFieldPattern,
  kSplineFieldParity, kSplineFieldWidth, kSplineFieldPlane, kSplineFieldBins, kSplineFieldReverse,
  kSplineLayoutFieldCount
};
inline constexpr const char* kSplineLayoutFieldNames[kSplineLayoutFieldCount] = {
    "lo", "hi", "params_stride", "inner", "pattern", "parity", "width", "plane", "bins", "reverse"};

// The most bins the kernels are compiled for: the per-element math keeps a handful of values per bin in
// registers and loops over the bins, so this bounds nothing but the ops' argument check (which refuses more).
constexpr int kMaxSplineBins = 32;

NF_HOST_DEVICE constexpr int spline_params_per_element(int bins) { return 3 * bins - 1; }

struct SplineLayout {
  FlatLayout select;      // which elements are transformed: batch, numel, [lo, hi) and the pattern (h_* unused)
  int64_t params_stride;  // elements of params per sample: (hi - lo) * P
  int64_t inner;          // R, elements per channel
  int bins;               // K
};

// The spline's shape constants (SPEC): knots on [-bound, bound], the three minimums, and the direction.
struct SplineConfig {
  double bound;
  double min_bin_width;
  double min_bin_height;
  double min_derivative;
  bool reverse;
};

}  // namespace nf_kernels
