// The flat description of a coupling that every fused kernel works from (mirrors nf_kernels/_layout.py).
//
// A sample of x is `numel` contiguous elements. The ones that may be transformed form the range [lo, hi); element n
// of that range has a position p in h's parameter blocks, p = n - lo, or (pattern "gather", a compact h) read from
// a per-element table. Its s_raw sits at h[b * h_stride + base(p) + s_offset] and its shift at
// h[b * h_stride + base(p) + t_offset], where base(p) = p, or p + (p / pair_inner) * pair_inner for (t, s_raw)
// channel pairs (h_base() below). Inside the range a pattern picks the transformed elements: all of them ("half"),
// a checkerboard parity computed from the indices, a uint8 mask read from memory, or the table's entries >= 0.
// Python computes these numbers once (flat_layout()); C++ never re-derives a mask.
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

// ---- Index arithmetic without division, for the CUDA kernels (csrc/tests/test_coupling.cpp checks it) ----------

// The high half of a 32 x 32-bit and of a 64 x 64-bit unsigned product.
NF_HOST_DEVICE uint32_t mul_hi_u32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

NF_HOST_DEVICE uint64_t mul_hi_u64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(a, b);
#else
  const uint64_t a_lo = a & 0xffffffffu, a_hi = a >> 32, b_lo = b & 0xffffffffu, b_hi = b >> 32;
  const uint64_t lo_lo = a_lo * b_lo, hi_lo = a_hi * b_lo, lo_hi = a_lo * b_hi;
  const uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xffffffffu) + lo_hi;  // < 2^64
  return a_hi * b_hi + (hi_lo >> 32) + (cross >> 32);
#endif
}

NF_HOST_DEVICE uint32_t mul_hi(uint32_t a, uint32_t b) { return mul_hi_u32(a, b); }
NF_HOST_DEVICE uint64_t mul_hi(uint64_t a, uint64_t b) { return mul_hi_u64(a, b); }

// n / d for a divisor fixed per launch, as a multiply-high, a subtraction and two shifts (Granlund and Montgomery's
// round-up method with an (N+1)-bit multiplier): exact for every N-bit n and every 1 <= d < 2^N. U is uint32_t or
// uint64_t; make_fast_div runs on the host, fast_div anywhere.
template <class U>
struct FastDiv {
  U divisor;
  U magic;     // floor(2^N (2^l - d) / d) + 1, l = ceil(log2 d)
  int shift1;  // min(l, 1)
  int shift2;  // max(l - 1, 0)
};

template <class U>
inline FastDiv<U> make_fast_div(U d) {
  constexpr int kBits = static_cast<int>(sizeof(U) * 8);
  int l = 0;
  while (l < kBits && (U(1) << l) < d) ++l;
  const U excess = l == kBits ? U(0) - d : (U(1) << l) - d;  // 2^l - d, in [0, d)
  // floor(excess * 2^N / d) by long division: the remainder stays below d, the quotient below 2^N.
  U quotient = 0, remainder = excess;
  for (int bit = 0; bit < kBits; ++bit) {
    const bool carry = (remainder >> (kBits - 1)) != 0;
    remainder = static_cast<U>(remainder << 1);
    quotient = static_cast<U>(quotient << 1);
    if (carry || remainder >= d) {
      remainder = static_cast<U>(remainder - d);
      quotient |= 1;
    }
  }
  return {d, static_cast<U>(quotient + 1), l < 1 ? l : 1, l > 1 ? l - 1 : 0};
}

template <class U>
NF_HOST_DEVICE U fast_div(const FastDiv<U>& f, U n) {
  const U t = mul_hi(f.magic, n);
  return (t + ((n - t) >> f.shift1)) >> f.shift2;
}

// The kernel interface's codes and the packed layout argument of the nf_kernels_ext ops. A scale map's code is its
// index in kScaleNames, a pattern's its index in kPatternNames, and the ops' `int[] layout` holds the fields of
// kLayoutFieldNames in that order. nf_kernels/_layout.py defines the same lists for Python (SCALE_NAMES,
// PATTERN_NAMES, LAYOUT_FIELDS); the extension exports these (kernel_codes) and a test checks that they agree.
// Codes 5 on reproduce a peer library's map (docs/spec.md's scale table names which).
enum ScaleCode : int {
  kAdditive = 0, kExp, kTanh, kAtan, kSigmoid,
  kRSigmoid, kNflowsSigmoid, kSoftclamp, kClip, kFreiaAtan, kFreiaTanh, kFreiaSigmoid, kScaleCount
};
inline constexpr const char* kScaleNames[kScaleCount] = {
    "none", "exp", "tanh", "atan", "sigmoid",
    "rsigmoid", "nflows_sigmoid", "softclamp", "clip", "freia_atan", "freia_tanh", "freia_sigmoid"};

enum PatternCode : int { kPatternRange = 0, kPatternCheckerboard, kPatternMask, kPatternGather, kPatternCount };
inline constexpr const char* kPatternNames[kPatternCount] = {"range", "checkerboard", "mask", "gather"};

enum LayoutField : int {
  kFieldLo = 0, kFieldHi, kFieldHStride, kFieldTOffset, kFieldPattern, kFieldParity, kFieldWidth, kFieldPlane,
  kFieldScale, kFieldShiftFirst, kFieldReverse, kFieldSOffset, kFieldPairInner, kLayoutFieldCount
};
inline constexpr const char* kLayoutFieldNames[kLayoutFieldCount] = {
    "lo", "hi", "h_stride", "t_offset", "pattern", "parity", "width", "plane", "scale_code", "shift_first", "reverse",
    "s_offset", "pair_inner"};

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
  int64_t s_offset = 0;        // s_raw's position relative to base(p) (t_offset the shift's)
  int64_t pair_inner = 0;      // (t, s_raw) channel pairs: elements in a channel of h; 0 for the other layouts
  FastDiv<uint64_t> pair_div{};  // p / pair_inner, when pair_inner > 0 (make_coupling_call fills it)
  const int32_t* h_index = nullptr;  // kPatternGather: [numel], p of each transformed element, -1 where kept
};

struct CouplingConfig {
  int scale;  // ScaleCode
  double clamp;  // the map's bound; the upper one of "clip"
  bool shift_first;
  bool reverse;
  double clamp_low = 0.0;  // the lower bound of "clip"
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
  if (layout.pattern == kPatternGather) return layout.h_index[n] >= 0;
  return true;
}

// The position p of transformed element n in h's parameter blocks: n - lo, or a compact h's table entry.
NF_HOST_DEVICE int64_t h_position(const FlatLayout& layout, int64_t n) {
  return layout.pattern == kPatternGather ? layout.h_index[n] : n - layout.lo;
}

// Whether each parameter of a run of elements is one run of h (from h_base + n on, plus s_offset or t_offset): every
// layout but channel pairs and a compact h.
NF_HOST_DEVICE bool params_in_runs(const FlatLayout& layout) {
  return layout.pair_inner == 0 && layout.pattern != kPatternGather;
}

// base(p): where position p's parameters start in a sample of h, before s_offset and t_offset. (t, s_raw) channel
// pairs put the c-th channel of parameters at channel 2c: base(p) = p + (p / pair_inner) * pair_inner.
NF_HOST_DEVICE int64_t h_base(const FlatLayout& layout, int64_t p) {
  if (layout.pair_inner == 0) return p;
  return p + static_cast<int64_t>(fast_div(layout.pair_div, static_cast<uint64_t>(p))) * layout.pair_inner;
}


// The checkerboard selection of G consecutive flat elements n0 .. n0 + G - 1 (bit k: element n0 + k is at an
// (i + j) parity equal to `parity`, the pattern part of is_transformed, range not included). The row i and column j
// of n0 come from one fast division by the plane and one by the width, in 32 bits when the numbers fit (`narrow_*`)
// and in 64 otherwise; the G elements then walk along the row, wrapping to the next row and plane: no division per
// element, and no limit on H * W.
struct CheckerboardIndex {
  FastDiv<uint32_t> plane32, width32;  // valid when narrow_flat / narrow_plane
  FastDiv<uint64_t> plane64, width64;
  int64_t width, height;  // W, H
  int parity;
  bool narrow_flat;   // every flat index of a sample and the plane below 2^32: n / plane in 32 bits
  bool narrow_plane;  // the plane below 2^32: r / W in 32 bits for r = n mod plane
};

// For a kPatternCheckerboard layout (width >= 1, plane a positive multiple of width); host only.
inline CheckerboardIndex make_checkerboard_index(const FlatLayout& layout) {
  CheckerboardIndex c{};
  const uint64_t plane = static_cast<uint64_t>(layout.plane), width = static_cast<uint64_t>(layout.width);
  c.narrow_plane = plane < (uint64_t(1) << 32);
  c.narrow_flat = c.narrow_plane && static_cast<uint64_t>(layout.numel) <= (uint64_t(1) << 32);
  if (c.narrow_plane) {
    c.plane32 = make_fast_div(static_cast<uint32_t>(plane));
    c.width32 = make_fast_div(static_cast<uint32_t>(width));
  }
  c.plane64 = make_fast_div(plane);
  c.width64 = make_fast_div(width);
  c.width = layout.width;
  c.height = layout.plane / layout.width;
  c.parity = layout.parity;
  return c;
}

template <int G>
NF_HOST_DEVICE uint32_t checkerboard_bits(const CheckerboardIndex& c, int64_t n0) {
  uint64_t i, j;  // row and column of element n0 in its plane
  if (c.narrow_flat) {
    const uint32_t n = static_cast<uint32_t>(n0);
    const uint32_t r = n - fast_div(c.plane32, n) * c.plane32.divisor;
    const uint32_t row = fast_div(c.width32, r);
    i = row, j = r - row * c.width32.divisor;
  } else {
    const uint64_t n = static_cast<uint64_t>(n0);
    const uint64_t r = n - fast_div(c.plane64, n) * c.plane64.divisor;
    if (c.narrow_plane) {
      const uint32_t r32 = static_cast<uint32_t>(r), row = fast_div(c.width32, r32);
      i = row, j = r32 - row * c.width32.divisor;
    } else {
      i = fast_div(c.width64, r), j = r - i * c.width64.divisor;
    }
  }
  // Elements left in this row and rows left in this plane, counting the current one; at most G - 1 steps follow,
  // so both are clamped to G and fit in an int.
  const uint64_t w = static_cast<uint64_t>(c.width), h = static_cast<uint64_t>(c.height);
  int in_row = w - j < uint64_t(G) ? static_cast<int>(w - j) : G;
  int rows = h - i < uint64_t(G) ? static_cast<int>(h - i) : G;
  const int full_row = w < uint64_t(G) ? static_cast<int>(w) : G, full_plane = h < uint64_t(G) ? static_cast<int>(h) : G;
  int row_parity = static_cast<int>(i & 1), p = static_cast<int>((i + j) & 1);
  uint32_t bits = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int k = 0; k < G; ++k) {
    bits |= static_cast<uint32_t>(p == c.parity) << k;
    if (--in_row == 0) {  // on to the next row, or the first row of the next plane
      in_row = full_row;
      if (--rows == 0) {
        rows = full_plane;
        row_parity = 0;
      } else {
        row_parity ^= 1;
      }
      p = row_parity;
    } else {
      p ^= 1;
    }
  }
  return bits;
}

}  // namespace nf_kernels
