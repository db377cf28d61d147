// C++ tests of the peer libraries' scale maps (coupling_math.h, scale codes 5 on): each map's derivative against a
// central finite difference of the map itself, each map in float against a long double evaluation of its SPEC
// formula over the whole range (near 0, where the conditioners start, and at the overflow edge, where exp(|s|)
// passes float's range), and the float log and log1p that two of them use (vector_math.h), log1p where its
// argument is small of either sign. Torch-free; ctest runs it (CMakeLists.txt).
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "../coupling_math.h"
#include "checks.h"

namespace {

using Long = long double;
constexpr double kClamp = 1.7, kLow = -1.1;  // "clip" takes (kLow, kClamp); every other map kClamp

// Each map's SPEC formula (docs/spec.md's scale table), in long double, written stably so that its own rounding
// stays far below float's. Its inputs are the float kernel's: s, the constants, and v = s + 2 rounded to float (that
// rounding is the formula's own, in any float implementation: up to 8 eps of rsigmoid's tiny values at large s).
Long sigmoid(Long v) { return v >= 0 ? 1 / (1 + std::exp(-v)) : std::exp(v) / (1 + std::exp(v)); }

Long spec_map(int scale, float s_float) {
  const Long s = s_float, c = static_cast<float>(kClamp), low = static_cast<float>(kLow), v = s_float + 2.0f;
  switch (scale) {
    case nf_kernels::kRSigmoid: return v >= 0 ? std::log1p(std::exp(-v)) : -v + std::log1p(std::exp(v));
    case nf_kernels::kNflowsSigmoid: return std::log(sigmoid(v) + Long(1e-3));
    case nf_kernels::kSoftclamp: return s / (1 + std::fabs(s) / c);
    case nf_kernels::kClip: return s < low ? low : (s > c ? c : s);
    case nf_kernels::kFreiaAtan: return c * Long(0.636) * std::atan(s);
    case nf_kernels::kFreiaTanh: return c * std::tanh(s);
    case nf_kernels::kFreiaSigmoid: return c * std::tanh(s / 2);  // = c (2 sigmoid(s) - 1), without its cancellation
  }
  return 0;
}

template <int kScale, class T>
T map(T s) {
  return nf_kernels::log_scale<kScale>(s, T(kClamp), T(kLow));
}

template <int kScale, class T>
T map_grad(T s) {
  return nf_kernels::log_scale_grad<kScale>(s, T(kClamp));
}

// Arguments across the range: dense near 0 (both signs, down to 1e-30), a grid over [-30, 30], and the overflow
// edge of exp in float (|s| from 80 to 100), float's largest and infinities.
std::vector<double> arguments() {
  std::vector<double> s;
  for (int k = 1; k <= 30; ++k)
    for (int i = 0; i < 50; ++i) {
      const double v = std::pow(10.0, -k) * (1 + i / 25.0);
      s.push_back(v), s.push_back(-v);
    }
  for (int i = -30000; i <= 30000; ++i) s.push_back(i / 1000.0);
  for (int i = 0; i <= 2000; ++i) s.push_back(80 + i / 100.0), s.push_back(-80 - i / 100.0);
  for (double v : {0.0, 1e30, 1e38, double(FLT_MAX), double(INFINITY)}) s.push_back(v), s.push_back(-v);
  return s;
}

// The float map's error, in units of float epsilon times |a| (plus, for nflows' map, its floor's scale: its value
// crosses 0 near s = 4.9, where the floor minus sigmoid(-v) cancels by design of the formula).
template <int kScale>
void test_float_accuracy(const char* name, double max_units) {
  const double floor = kScale == nf_kernels::kNflowsSigmoid ? 1e-3 : 0.0;
  double worst = 0, worst_at = 0;
  for (double s : arguments()) {
    const float a = map<kScale>(static_cast<float>(s));
    const Long want = spec_map(kScale, static_cast<float>(s));
    if (std::isinf(want) || std::isnan(want)) {
      check(a == static_cast<float>(want) || (std::isnan(a) && std::isnan(want)),
            std::string(name) + " keeps the formula's limit at s=" + std::to_string(s));
      continue;
    }
    check(std::isfinite(a), std::string(name) + " is finite where its formula is, at s=" + std::to_string(s));
    const double scale = std::max<double>(std::fabs(static_cast<double>(want)) + floor, FLT_MIN);
    const double units = std::fabs(static_cast<double>(a - want)) / (scale * FLT_EPSILON);
    if (units > worst) worst = units, worst_at = s;
  }
  std::printf("%-15s float error %.2f eps x |a| (at s=%g)\n", name, worst, worst_at);
  check(worst <= max_units, std::string(name) + " in float is within " + std::to_string(max_units) + " eps of its formula");
  // NaN in, NaN out (SPEC: NaN propagates), for the value and the derivative.
  check(std::isnan(map<kScale>(NAN)) && std::isnan(map<kScale>(double(NAN))), std::string(name) + " of NaN is NaN");
  check(std::isnan(map_grad<kScale>(NAN)) || kScale == nf_kernels::kClip, std::string(name) + "' of NaN is NaN");
}

// The derivative against (a(s + d) - a(s - d)) / 2d of the double map, relative to 1 + |a'|; float's derivative
// against double's. Where the map has a kink ("clip" at its bounds) the difference is skipped; there and outside
// the bounds "clip"'s derivative is 1 (pyro's pass-through gradient), which is checked instead.
template <int kScale>
void test_derivative(const char* name) {
  double worst = 0, worst_float = 0, worst_at = 0;
  for (int i = -16000; i <= 16000; ++i) {
    const double s = i / 1000.0 + 0.0003;  // off the grid of kinks
    const double d = 1e-5 * std::max(1.0, std::fabs(s));
    const double grad = map_grad<kScale>(s);
    if (kScale == nf_kernels::kClip && (s - d <= kLow || s + d >= kClamp)) {
      check(grad == 1.0, std::string(name) + "' is 1 outside its bounds too");
      continue;
    }
    const double fd = (map<kScale>(s + d) - map<kScale>(s - d)) / (2 * d);
    const double err = std::fabs(fd - grad) / (1 + std::fabs(grad));
    if (err > worst) worst = err, worst_at = s;
    const double float_err = std::fabs(map_grad<kScale>(static_cast<float>(s)) - map_grad<kScale>(double(float(s)))) /
                             (std::fabs(grad) + FLT_MIN) / FLT_EPSILON;
    worst_float = std::max(worst_float, float_err);
  }
  std::printf("%-15s derivative vs finite difference %.2g (at s=%g); float derivative %.2f eps\n", name, worst,
              worst_at, worst_float);
  check(worst < 1e-7, std::string(name) + "' matches the finite difference of the map");
  check(worst_float < 16, std::string(name) + "' in float is within 16 eps of double's");
  // At the overflow edge the derivative is finite (0 where the map saturates), never NaN from inf / inf.
  for (double s : {80.0, 89.0, 100.0, 1e30, double(FLT_MAX), double(INFINITY)})
    for (double sign : {1.0, -1.0}) {
      if (kScale == nf_kernels::kSoftclamp && std::isinf(s)) continue;  // s / (1 + |s| / c): NaN, as the formula's
      const float g = map_grad<kScale>(static_cast<float>(sign * s));
      check(std::isfinite(g) && g >= (kScale == nf_kernels::kRSigmoid ? -1.0f : 0.0f),
            std::string(name) + "' is finite at s=" + std::to_string(sign * s));
    }
}

template <int kScale>
void test_map(const char* name, double max_units) {
  test_float_accuracy<kScale>(name, max_units);
  test_derivative<kScale>(name);
}

// Distance in float ulps of `got` from `want`.
double ulps(float got, Long want) {
  const float rounded = static_cast<float>(want);
  const double unit = std::max<double>(std::fabs(std::nextafter(rounded, INFINITY) - rounded), FLT_TRUE_MIN);
  return std::fabs(static_cast<double>(got) - static_cast<double>(want)) / unit;
}

void test_log_and_log1p() {
  namespace vm = nf_kernels::vector_math;
  double worst_log = 0, worst_log1p = 0, log1p_at = 0;
  for (int i = 0; i <= 400000; ++i) {
    const float u = 1e-3f + 60.0f * i / 400000.0f;
    worst_log = std::max(worst_log, ulps(vm::log(u), std::log(Long(u))));
  }
  // log1p(u) for |u| < 0.1 of both signs, down to 1e-30: nflows' log1p(1e-3 - sigmoid(-v)) crosses 0 there.
  for (int k = 1; k <= 30; ++k)
    for (int i = 0; i < 2000; ++i)
      for (float sign : {1.0f, -1.0f}) {
        const float u = sign * static_cast<float>(std::pow(10.0, -k) * (1 + 9.0 * i / 2000.0)) * (k == 1 ? 0.1f : 1.0f);
        const double e = ulps(vm::log1p(u), std::log1p(Long(u)));
        if (e > worst_log1p) worst_log1p = e, log1p_at = u;
      }
  std::printf("log    max error %.2f ulp over [1e-3, 60]; log1p max error %.2f ulp for |u| < 0.1 (at %g)\n", worst_log,
              worst_log1p, log1p_at);
  check(worst_log <= 3, "float log is within 3 ulp of libm");
  check(worst_log1p <= 3, "float log1p is within 3 ulp of libm near 0, both signs");
  const float inf = std::numeric_limits<float>::infinity();
  check(vm::log(0.0f) == -inf && vm::log(inf) == inf && std::isnan(vm::log(-1.0f)) && std::isnan(vm::log(NAN)),
        "log of 0, inf, a negative number and NaN");
  check(std::isnan(vm::log1p(NAN)), "log1p of NaN");
}

}  // namespace

int main() {
  test_log_and_log1p();
  test_map<nf_kernels::kRSigmoid>("rsigmoid", 4);
  test_map<nf_kernels::kNflowsSigmoid>("nflows_sigmoid", 4);
  test_map<nf_kernels::kSoftclamp>("softclamp", 4);
  test_map<nf_kernels::kClip>("clip", 0);
  test_map<nf_kernels::kFreiaAtan>("freia_atan", 4);
  test_map<nf_kernels::kFreiaTanh>("freia_tanh", 4);
  test_map<nf_kernels::kFreiaSigmoid>("freia_sigmoid", 4);
  std::printf(failures ? "%d check(s) failed\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
