// float16 and bfloat16 <-> float conversions on raw 16-bit words, written with integer operations and selects
// so that conversion loops vectorize at any instruction set (and so the CPU kernels need no torch header).
// Rounding is to nearest, ties to even, as torch's own conversions; NaN stays NaN, overflow becomes inf.
#pragma once

#include <cstdint>

#include "../vector_math.h"

namespace nf_kernels {
namespace cpu {
namespace {  // internal linkage: one copy per instruction-set translation unit

using vector_math::from_bits;
using vector_math::to_bits;

inline float bfloat16_to_float(uint16_t word) { return from_bits(static_cast<uint32_t>(word) << 16); }

inline uint16_t float_to_bfloat16(float value) {
  const uint32_t u = to_bits(value);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x0040u;  // keep the sign, force a quiet NaN (rounding could make it inf)
  return static_cast<uint16_t>(value != value ? quiet_nan : rounded);
}

inline float float16_to_float(uint16_t word) {
  const uint32_t sign = (static_cast<uint32_t>(word) & 0x8000u) << 16;
  const uint32_t magnitude = static_cast<uint32_t>(word) & 0x7fffu;
  // Exponent and mantissa moved into float position: multiplying by 2^112 rebiases the exponent (127 - 15),
  // and turns half subnormals (read as float subnormals) into the right normal floats, exactly.
  const float finite = from_bits(magnitude << 13) * 5.192296858534828e33f;  // 2^112
  const uint32_t special = (magnitude << 13) | 0x7f800000u;                  // inf or NaN, payload kept
  return from_bits((magnitude >= 0x7c00u ? special : to_bits(finite)) | sign);
}

inline uint16_t float_to_float16(float value) {
  const uint32_t u = to_bits(value);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  // Normal halves: rebias the exponent by 15 - 127, then round the mantissa to 10 bits, ties to even. A carry
  // out of the mantissa correctly bumps the exponent.
  const uint32_t normal = (a - 0x38000000u + 0x0fffu + ((a >> 13) & 1u)) >> 13;
  // Below 2^-14 the result is subnormal: adding 0.5 makes the float unit in the last place 2^-24, the half
  // subnormal step, so the float addition does the rounding and the low bits are the half mantissa.
  const uint32_t subnormal = to_bits(from_bits(a) + 0.5f) - 0x3f000000u;
  uint32_t result = a < 0x38800000u ? subnormal : normal;
  result = a >= 0x477ff000u ? 0x7c00u : result;  // rounds to 65520 or more: inf
  result = a > 0x7f800000u ? 0x7e00u : result;   // NaN
  return static_cast<uint16_t>(result | sign);
}

}  // namespace
}  // namespace cpu
}  // namespace nf_kernels
