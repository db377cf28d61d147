// float exp, log, log1p, tanh and atan made of arithmetic, bit operations and selects only, so that a C++ compiler can
// vectorize a loop calling them (libm's scalar calls block vectorization). Host code only: CUDA uses libdevice.
//
// Each is within a few ulp of libm over the whole float range (csrc/tests/test_coupling.cpp measures it), and
// NaN and infinities propagate as libm's do. The polynomials are plain Taylor series on a reduced argument, with
// the term count chosen so the first omitted term is below float rounding; no fitted constants.
//
// Functions have internal linkage on purpose: the CPU kernels are compiled once per instruction set (AVX-512,
// AVX2, baseline) and each translation unit must keep its own copy instead of sharing one through the linker.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace nf_kernels {
namespace vector_math {
namespace {

inline float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint32_t to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

constexpr float kLn2Hi = 0.693145751953125f;  // ln 2 with its low mantissa bits zero, so k * kLn2Hi is exact
constexpr float kLn2Lo = 1.42860682030941723212e-6f;  // ln 2 - kLn2Hi

inline float exp(float v) {
  // Beyond [-104, 89] expf is 0 or inf; clamping keeps the integer k below in range. NaN skips the clamps
  // (comparisons are false) and is put back at the end, so the int conversion never sees it.
  const bool nan = v != v;
  float c = nan ? 0.0f : v;
  c = c > 89.0f ? 89.0f : c;
  c = c < -104.0f ? -104.0f : c;
  // c = k ln2 + r with |r| <= ln2 / 2. Adding 1.5 * 2^23 rounds c / ln2 to an integer (round to nearest).
  const float shifter = 12582912.0f;
  const float kf = (c * 1.44269504088896341f + shifter) - shifter;
  const float r = (c - kf * kLn2Hi) - kf * kLn2Lo;
  // exp(r) to r^7: the remainder r^8 / 8! < 5.2e-9 is below float rounding.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // Scale by 2^k in two factors, each a normal float for k in [-150, 129]: results that are subnormal, or
  // overflow to inf, come out of the final rounding of the multiplication.
  const int32_t k = static_cast<int32_t>(kf);
  const int32_t k1 = k / 2;
  const int32_t k2 = k - k1;
  const float result = p * from_bits(static_cast<uint32_t>(k1 + 127) << 23) *
                       from_bits(static_cast<uint32_t>(k2 + 127) << 23);
  return nan ? v : result;
}

// log(u) for a u that is not 1 + a rounded v: the bit decomposition both log and log1p use. Special cases (inf, 0,
// negative) as libm's; NaN propagates through the arithmetic.
inline float log_decomposed(float u) {
  // u = 2^k * m with m in [sqrt(1/2), sqrt(2)), read from the bits (u is a normal float or special, see below).
  const uint32_t bits = to_bits(u);
  int32_t k = static_cast<int32_t>((bits >> 23) & 0xffu) - 127;
  float m = from_bits((bits & 0x007fffffu) | 0x3f800000u);
  const bool upper = m > 1.41421356f;
  m = upper ? 0.5f * m : m;
  k = upper ? k + 1 : k;
  // log(m) = 2 atanh(f) = 2 (f + f^3/3 + ...), f = (m - 1) / (m + 1), |f| <= 0.172: to f^9 the remainder
  // f^10 / 11 relative is 2e-9.
  const float f = (m - 1.0f) / (m + 1.0f);
  const float f2 = f * f;
  float p = 1.0f / 9.0f;
  p = p * f2 + 1.0f / 7.0f;
  p = p * f2 + 1.0f / 5.0f;
  p = p * f2 + 1.0f / 3.0f;
  p = p * f2 + 1.0f;
  const float kf = static_cast<float>(k);
  return kf * kLn2Hi + (2.0f * f * p + kf * kLn2Lo);
}

// The special values of log(u) where the decomposition does not apply: inf, 0, negative u and NaN (whose bits
// decompose into a finite number).
inline float log_special(float u, float result) {
  const float inf = from_bits(0x7f800000u);
  float special = u == inf ? inf : (u != u ? u : result);
  special = u == 0.0f ? -inf : special;
  return u < 0.0f ? from_bits(0x7fc00000u) : special;
}

// For normal u (subnormal u is not a case the kernels meet: they take log of numbers above 1e-3).
inline float log(float u) { return log_special(u, log_decomposed(u)); }

inline float log1p(float v) {
  const float u = 1.0f + v;
  // u is 1 + v rounded; (v - (u - 1)) / u adds back the first-order effect of that rounding.
  return log_special(u, log_decomposed(u) + (v - (u - 1.0f)) / u);
}

inline float tanh(float u) {
  const float w = std::fabs(u);
  // Near 0, (1 - e) / (1 + e) would cancel; there the Taylor series to w^11 is exact to float rounding for
  // w < 0.3 (next term 3.6e-3 w^13 < 2e-9 w).
  const float z = w * w;
  float p = -1382.0f / 155925.0f;
  p = p * z + 62.0f / 2835.0f;
  p = p * z - 17.0f / 315.0f;
  p = p * z + 2.0f / 15.0f;
  p = p * z - 1.0f / 3.0f;
  const float small = w + w * z * p;
  const float e = vector_math::exp(-2.0f * w);  // in (0, 1]: no overflow
  const float large = (1.0f - e) / (1.0f + e);
  return std::copysign(w < 0.3f ? small : large, u);
}

inline float atan(float u) {
  const float w = std::fabs(u);
  // Reduce to |z| <= tan(pi/8) with one division: atan(w) = pi/2 + atan(-1/w) = pi/4 + atan((w-1)/(w+1)).
  const bool above = w > 2.41421356f;   // tan(3 pi / 8)
  const bool middle = w > 0.41421356f;  // tan(pi / 8)
  const float numerator = above ? -1.0f : (middle ? w - 1.0f : w);
  const float denominator = above ? w : (middle ? w + 1.0f : 1.0f);
  const float z = numerator / denominator;
  const float base = above ? 1.57079632679489662f : (middle ? 0.78539816339744831f : 0.0f);
  // atan(z) = z - z^3/3 + ... to z^17: with z^2 <= 0.172 the first omitted term is below 7e-9 z.
  const float z2 = z * z;
  float p = 1.0f / 17.0f;
  p = p * z2 - 1.0f / 15.0f;
  p = p * z2 + 1.0f / 13.0f;
  p = p * z2 - 1.0f / 11.0f;
  p = p * z2 + 1.0f / 9.0f;
  p = p * z2 - 1.0f / 7.0f;
  p = p * z2 + 1.0f / 5.0f;
  p = p * z2 - 1.0f / 3.0f;
  p = p * z2 + 1.0f;
  return std::copysign(base + z * p, u);
}

}  // namespace
}  // namespace vector_math
}  // namespace nf_kernels
