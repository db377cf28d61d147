// The flat description of a coupling that every fused kernel works from (mirrors nf_kernels/_layout.py).
//
// A sample of x is `numel` contiguous elements. The ones that may be transformed form the range [lo, hi); for
// element n of that range, s_raw sits at h[b * h_stride + n - lo] and the shift `t_offset` elements further on.
// Inside the range a pattern picks the transformed elements: all of them ("half"), a checkerboard parity computed
// from the indices, or a uint8 mask read from memory. Python computes these numbers once (flat_layout()); C++
// never re-derives a mask.
//
// Torch-free and usable from C++ and CUDA: plain data plus one index helper.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NF_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__) || defined(__clang__)
#define NF_HOST_DEVICE inline __attribute__((always_inline))
#else
#define NF_HOST_DEVICE inline
#endif

namespace nf_kernels {

// The kernel interface's codes and the packed layout argument of the nf_kernels_ext ops. A scale map's code is its
// index in kScaleNames, a pattern's its index in kPatternNames, and the ops' `int[] layout` holds the fields of
// kLayoutFieldNames in that order. nf_kernels/_layout.py defines the same lists for Python (SCALE_NAMES,
// PATTERN_NAMES, LAYOUT_FIELDS); the extension exports these (kernel_codes) and a test checks that they agree.
enum ScaleCode : int { kAdditive = 0, kExp, kTanh, kAtan, kSigmoid, kScaleCount };
inline constexpr const char* kScaleNames[kScaleCount] = {"none", "exp", "tanh", "atan", "sigmoid"};

enum PatternCode : int { kPatternRange = 0, kPatternCheckerboard, kPatternMask, kPatternCount };
inline constexpr const char* kPatternNames[kPatternCount] = {"range", "checkerboard", "mask"};

enum LayoutField : int {
  kFieldLo = 0, kFieldHi, kFieldHStride, kFieldTOffset, kFieldPattern, kFieldParity, kFieldWidth, kFieldPlane,
  kFieldScale, kFieldShiftFirst, kFieldReverse, kLayoutFieldCount
};
inline constexpr const char* kLayoutFieldNames[kLayoutFieldCount] = {
    "lo", "hi", "h_stride", "t_offset", "pattern", "parity", "width", "plane", "scale_code", "shift_first", "reverse"};

// The element types the kernels read and write; half types travel as raw 16-bit words in torch-free code.
enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

struct FlatLayout {
  int64_t batch;     // B
  int64_t numel;     // N, elements in one sample of x
  int64_t lo, hi;    // flat indices [lo, hi) may be transformed
  int64_t h_stride;  // elements in one sample of h
  int64_t t_offset;  // shift position relative to s_raw inside a sample of h (0 for additive couplings)
  int pattern;       // PatternCode
  int parity;        // checkerboard: transformed where (i + j) % 2 == parity
  int64_t width;     // checkerboard: W
  int64_t plane;     // checkerboard: H * W
  const uint8_t* transformed;  // kPatternMask: [numel], nonzero where transformed; else unused
};

struct CouplingConfig {
  int scale;  // ScaleCode
  double clamp;
  bool shift_first;
  bool reverse;
};

// True where flat element n of a sample is transformed. The reference definition of the patterns; kernels may
// compute the same thing incrementally (the CPU walks checkerboard rows), and the C++ test checks they agree.
NF_HOST_DEVICE bool is_transformed(const FlatLayout& layout, int64_t n) {
  if (n < layout.lo || n >= layout.hi) return false;
  if (layout.pattern == kPatternCheckerboard) {
    const int64_t r = n % layout.plane;
    return ((r / layout.width + r % layout.width) & 1) == layout.parity;
  }
  if (layout.pattern == kPatternMask) return layout.transformed[n] != 0;
  return true;
}

}  // namespace nf_kernels
