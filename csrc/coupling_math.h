// The element-wise math of a coupling, written once for the CPU and CUDA kernels: the scale maps a(s) of the
// SPEC, their derivatives, the coupling step y = f(x, a, t) and its local gradient, for both directions and
// both orders of scale and shift. Kernels only load, select, reduce and store around these functions.
// It mirrors nf_kernels/backends/triton_kernels/coupling_math.py term by term.
//
// Elementary functions: libdevice on the GPU; on the CPU, libm for double and csrc/vector_math.h for float, whose
// loops the compiler vectorizes.
//
// Template parameters (scale code, shift_first, reverse) are compile-time so that the CPU inner loops are
// straight-line code; CUDA picks an instantiation per block.
#pragma once

#include <cmath>

#include "coupling_layout.h"
#if !defined(__CUDA_ARCH__)
#include "vector_math.h"
#endif

namespace nf_kernels {
namespace math {
namespace {  // internal linkage: see vector_math.h (one copy per instruction-set translation unit)

NF_HOST_DEVICE float exp(float v) {
#if defined(__CUDA_ARCH__)
  return ::expf(v);
#else
  return vector_math::exp(v);
#endif
}

NF_HOST_DEVICE double exp(double v) { return ::exp(v); }

NF_HOST_DEVICE float log1p(float v) {
#if defined(__CUDA_ARCH__)
  return ::log1pf(v);
#else
  return vector_math::log1p(v);
#endif
}

NF_HOST_DEVICE double log1p(double v) { return ::log1p(v); }

NF_HOST_DEVICE float log(float v) {
#if defined(__CUDA_ARCH__)
  return ::logf(v);
#else
  return vector_math::log(v);
#endif
}

NF_HOST_DEVICE double log(double v) { return ::log(v); }

NF_HOST_DEVICE float tanh(float v) {
#if defined(__CUDA_ARCH__)
  return ::tanhf(v);
#else
  return vector_math::tanh(v);
#endif
}

NF_HOST_DEVICE double tanh(double v) { return ::tanh(v); }

NF_HOST_DEVICE float atan(float v) {
#if defined(__CUDA_ARCH__)
  return ::atanf(v);
#else
  return vector_math::atan(v);
#endif
}

NF_HOST_DEVICE double atan(double v) { return ::atan(v); }

// log(sigmoid(v)) = -softplus(-v) = min(v, 0) - log1p(exp(-|v|)): no overflow, no log(0). Written so that a
// NaN v stays NaN (a plain min() would drop it).
template <class T>
NF_HOST_DEVICE T log_sigmoid(T v) {
  const T negative_part = v > T(0) ? T(0) : v;
  return negative_part - math::log1p(math::exp(-(v < T(0) ? -v : v)));
}

// 1 - tanh(u)^2 as 4e / (1 + e)^2 with e = exp(-2|u|): no cancellation where tanh(u) is near +-1, no overflow.
template <class T>
NF_HOST_DEVICE T tanh_derivative(T u) {
  const T e = math::exp(T(-2) * (u < T(0) ? -u : u));
  return T(4) * e / ((T(1) + e) * (T(1) + e));
}

// log(sigmoid(v) + floor) (nflows' scale, floor 1e-3), from e = exp(-|v|), which never overflows. For v >= 0 as
// log1p(floor - sigmoid(-v)): the result is near 1e-3 for large v, which log(1.001...) would get to only ~6e-5 of
// itself in float32. For v < 0 no term cancels. A NaN v takes the second branch and stays NaN.
template <class T>
NF_HOST_DEVICE T log_floored_sigmoid(T v, T floor) {
  const T e = math::exp(-(v < T(0) ? -v : v));
  const T small = e / (T(1) + e);  // sigmoid(-|v|)
  return v >= T(0) ? math::log1p(floor - small) : math::log(small + floor);
}

constexpr double kTwoOverPi = 0.63661977236758134308;
// The peers' fixed constants (nf_kernels/_arguments.py says where each comes from): nflows' floor on its scale and
// FrEIA's factor of its "ATAN" clamp (0.636, not 2 / pi).
constexpr double kNflowsScaleFloor = 1e-3;
constexpr double kFreiaAtanFactor = 0.636;

}  // namespace
}  // namespace math

namespace {

// s / clamp as s * (1 / clamp): the reciprocal is loop-invariant, so kernels compute it once instead of
// dividing per element (within one rounding of the quotient).
template <class T>
NF_HOST_DEVICE T over_clamp(T s, T clamp) {
  return s * (T(1) / clamp);
}

// a(s_raw), the SPEC's table of scale parameterizations (kAdditive: no scale, a = 0). `low` is the lower bound of
// kClip (clamp the upper one); the other maps ignore it.
template <int kScale, class T>
NF_HOST_DEVICE T log_scale(T s, T clamp, T low) {
  if (kScale == kTanh) return clamp * math::tanh(over_clamp(s, clamp));
  if (kScale == kAtan) return clamp * T(math::kTwoOverPi) * math::atan(over_clamp(s, clamp));
  if (kScale == kSigmoid) return math::log_sigmoid(s + T(2));
  if (kScale == kExp) return s;
  if (kScale == kRSigmoid) return -math::log_sigmoid(s + T(2));
  if (kScale == kNflowsSigmoid) return math::log_floored_sigmoid(s + T(2), T(math::kNflowsScaleFloor));
  if (kScale == kSoftclamp) return s / (T(1) + over_clamp(s < T(0) ? -s : s, clamp));
  // Comparisons, not min/max: a NaN fails both and passes through (SPEC: NaN propagates).
  if (kScale == kClip) return s < low ? low : (s > clamp ? clamp : s);
  if (kScale == kFreiaAtan) return clamp * T(math::kFreiaAtanFactor) * math::atan(s);
  if (kScale == kFreiaTanh) return clamp * math::tanh(s);
  if (kScale == kFreiaSigmoid) return clamp * math::tanh(T(0.5) * s);  // FrEIA's 2 (sigmoid(s) - 1/2), no cancellation
  return T(0);
}

// a'(s_raw); 1 for kClip, pyro's convention (the gradient passes through the clamp).
template <int kScale, class T>
NF_HOST_DEVICE T log_scale_grad(T s, T clamp) {
  if (kScale == kTanh) {
    const T th = math::tanh(over_clamp(s, clamp));
    return T(1) - th * th;
  }
  if (kScale == kAtan) {
    const T q = over_clamp(s, clamp);
    return T(math::kTwoOverPi) / (T(1) + q * q);
  }
  if (kScale == kSigmoid) return T(1) / (T(1) + math::exp(s + T(2)));  // 1 - sigmoid(v) = sigmoid(-v)
  if (kScale == kExp || kScale == kClip) return T(1);
  if (kScale == kRSigmoid) return T(-1) / (T(1) + math::exp(s + T(2)));
  if (kScale == kNflowsSigmoid) {
    // sigmoid(v) sigmoid(-v) / (sigmoid(v) + floor), both sigmoids from exp(-|v|).
    const T v = s + T(2);
    const T e = math::exp(-(v < T(0) ? -v : v));
    const T big = T(1) / (T(1) + e), small = e / (T(1) + e);  // sigmoid(|v|), sigmoid(-|v|)
    return big * small / ((v >= T(0) ? big : small) + T(math::kNflowsScaleFloor));
  }
  if (kScale == kSoftclamp) {
    const T q = T(1) + over_clamp(s < T(0) ? -s : s, clamp);
    return T(1) / (q * q);
  }
  if (kScale == kFreiaAtan) return clamp * T(math::kFreiaAtanFactor) / (T(1) + s * s);
  if (kScale == kFreiaTanh) return clamp * math::tanh_derivative(s);
  if (kScale == kFreiaSigmoid) return T(0.5) * clamp * math::tanh_derivative(T(0.5) * s);
  return T(0);
}

// The transformed element's output from its input x, log-scale a and shift t (SPEC semantics).
template <int kScale, bool kShiftFirst, bool kReverse, class T>
NF_HOST_DEVICE T coupling_step(T x, T a, T t) {
  if (kScale == kAdditive) return kReverse ? x - t : x + t;
  if (kReverse) return kShiftFirst ? x * math::exp(-a) - t : (x - t) * math::exp(-a);
  return kShiftFirst ? (x + t) * math::exp(a) : x * math::exp(a) + t;
}

template <class T>
struct StepGrad {
  T x;  // d loss / d x
  T t;  // d loss / d t
  T a;  // d loss / d a, including the log-det's share (d logdet / d a = +-1)
};

// Local gradient of one transformed element, from the gradient g of its output and the sample's log-det
// gradient. The output is u * exp(+-a) (+-t), with u = x, x + t or x - t depending on the order.
template <int kScale, bool kShiftFirst, bool kReverse, class T>
NF_HOST_DEVICE StepGrad<T> coupling_step_grad(T g, T g_logdet, T x, T a, T t) {
  if (kScale == kAdditive) return {g, kReverse ? -g : g, T(0)};
  if (kReverse) {
    const T e = math::exp(-a);
    const T u = kShiftFirst ? x : x - t;
    return {g * e, kShiftFirst ? -g : -g * e, -(g * u * e) - g_logdet};
  }
  const T e = math::exp(a);
  const T u = kShiftFirst ? x + t : x;
  return {g * e, kShiftFirst ? g * e : g, g * u * e + g_logdet};
}

}  // namespace
}  // namespace nf_kernels
