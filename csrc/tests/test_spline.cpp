// C++ tests of the spline ops (nf_kernels_ext::spline_forward / spline_backward on the CPU), run by ctest: the
// outputs against an independent float64 formula written with per-bin arrays (nflows' algorithm step by step),
// inputs on the knots, at and beyond the bound, round trips, the backward against central finite differences of
// y and of the log-det for every input and every parameter on each pattern and direction, parameters of kept
// elements ignored, thread-count-independent log-det bits, and the refusal of bad calls.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../cpu/spline_tiles.h"
#include "../spline_layout.h"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

using Pair = std::tuple<at::Tensor, at::Tensor>;
using ForwardSig = Pair(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, c10::ArrayRef<int64_t>,
                        double, double, double, double, bool);
using BackwardSig = Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const std::optional<at::Tensor>&, c10::ArrayRef<int64_t>, double, double, double, double,
                         bool);

const c10::TypedOperatorHandle<ForwardSig>& forward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("nf_kernels_ext::spline_forward", "").typed<ForwardSig>();
  return op;
}

const c10::TypedOperatorHandle<BackwardSig>& backward_op() {
  static const auto op =
      c10::Dispatcher::singleton().findSchemaOrThrow("nf_kernels_ext::spline_backward", "").typed<BackwardSig>();
  return op;
}

struct Shape {
  double bound = 3.0, min_bin_width = 1e-3, min_bin_height = 1e-3, min_derivative = 1e-3;
};

// A call of the ops: x [B, C, *spatial], its mask pattern, and params in the nflows layout.
struct Case {
  at::Tensor x, params;
  std::optional<at::Tensor> transformed;
  std::vector<int64_t> layout;
  int bins;
  bool reverse;
  Shape shape;
  int64_t lo, hi, inner;

  Pair forward(const at::Tensor& xx, const at::Tensor& pp) const {
    return forward_op().call(xx, pp, transformed, layout, shape.bound, shape.min_bin_width, shape.min_bin_height,
                             shape.min_derivative, true);
  }
  Pair backward(const at::Tensor& gy, const at::Tensor& gl) const {
    return backward_op().call(gy, gl, x, params, transformed, layout, shape.bound, shape.min_bin_width,
                              shape.min_bin_height, shape.min_derivative, true);
  }
  // Whether flat element n of a sample is transformed (the patterns' definition, coupling_layout.h).
  bool selected(int64_t n) const {
    if (n < lo || n >= hi) return false;
    const int64_t pattern = layout[nf_kernels::kSplineFieldPattern];
    if (pattern == nf_kernels::kPatternCheckerboard) {
      const int64_t width = layout[nf_kernels::kSplineFieldWidth], plane = layout[nf_kernels::kSplineFieldPlane];
      const int64_t r = n % plane;
      return ((r / width + r % width) & 1) == layout[nf_kernels::kSplineFieldParity];
    }
    if (pattern == nf_kernels::kPatternMask) return transformed->data_ptr<uint8_t>()[n] != 0;
    return true;
  }
  // Parameter j of flat element n of sample b, as an index into params' flat memory.
  int64_t param_index(int64_t b, int64_t n, int j) const {
    const int64_t local = n - lo, per = 3 * bins - 1;
    return b * (hi - lo) * per + (local / inner) * per * inner + j * inner + local % inner;
  }
};

enum class Mask { kHalf, kCheckerboard, kTensor };

// x drawn inside the bound mostly (scale 1.2 of N(0, 1)), some outside; params N(0, param_scale).
Case make_case(std::vector<int64_t> sizes, Mask mask, int bins, bool reverse, at::ScalarType dtype, double param_scale,
               uint64_t seed) {
  at::manual_seed(seed);
  Case c;
  c.bins = bins;
  c.reverse = reverse;
  const int64_t batch = sizes[0], channels = sizes[1];
  int64_t inner = 1;
  for (size_t d = 2; d < sizes.size(); ++d) inner *= sizes[d];
  const int64_t numel = channels * inner, per = 3 * bins - 1;
  c.inner = inner;
  int64_t pattern = nf_kernels::kPatternRange, parity = 0, width = 0, plane = 0, param_channels = channels;
  if (mask == Mask::kHalf) {
    c.lo = (channels / 2) * inner, c.hi = numel;
    param_channels = channels - channels / 2;
  } else {
    c.lo = 0, c.hi = numel;
    if (mask == Mask::kCheckerboard) {
      pattern = nf_kernels::kPatternCheckerboard, parity = 1, width = sizes.back();
      plane = sizes[sizes.size() - 2] * width;
    } else {
      pattern = nf_kernels::kPatternMask;
      c.transformed = (at::rand({numel}) < 0.6).to(at::kByte);
    }
  }
  c.layout = {c.lo, c.hi, (c.hi - c.lo) * per, inner, pattern, parity, width, plane, bins, reverse ? 1 : 0};
  c.x = (1.2 * at::randn(sizes, at::kDouble)).to(dtype);
  std::vector<int64_t> param_sizes = sizes;
  param_sizes[1] = param_channels * per;
  c.params = (param_scale * at::randn(param_sizes, at::kDouble)).to(dtype);
  return c;
}

// ---- An independent float64 spline: nflows' algorithm with per-bin arrays ----------------------------------------

struct Knots {
  std::vector<double> x, y, d;  // K + 1 knots and derivatives
};

Knots knots_of(const double* u, int64_t stride, int bins, const Shape& s) {
  auto normalized = [&](int offset, double minimum) {
    std::vector<double> v(bins);
    double max = -std::numeric_limits<double>::infinity(), sum = 0;
    for (int j = 0; j < bins; ++j) max = std::max(max, u[(offset + j) * stride]);
    for (int j = 0; j < bins; ++j) sum += v[j] = std::exp(u[(offset + j) * stride] - max);
    std::vector<double> knots(bins + 1, -s.bound);
    double cum = 0;
    for (int j = 0; j < bins; ++j) {
      cum += minimum + (1 - minimum * bins) * v[j] / sum;
      knots[j + 1] = -s.bound + 2 * s.bound * cum;
    }
    knots[bins] = s.bound;
    return knots;
  };
  Knots k{normalized(0, s.min_bin_width), normalized(bins, s.min_bin_height), std::vector<double>(bins + 1, 1.0)};
  for (int i = 1; i < bins; ++i) {
    const double raw = u[(2 * bins + i - 1) * stride];
    k.d[i] = s.min_derivative + std::max(raw, 0.0) + std::log1p(std::exp(-std::abs(raw)));
  }
  return k;
}

// (output, log-det term) of one element.
std::pair<double, double> reference_spline(double v, const Knots& k, int bins, const Shape& s, bool reverse) {
  if (!(v >= -s.bound && v <= s.bound)) return {v, 0.0};
  const std::vector<double>& key = reverse ? k.y : k.x;
  int bin = 0;
  for (int j = 0; j < bins; ++j)
    if (key[j] <= v) bin = j;
  const double w = k.x[bin + 1] - k.x[bin], h = k.y[bin + 1] - k.y[bin], sl = h / w;
  const double d0 = k.d[bin], d1 = k.d[bin + 1];
  double theta;
  if (reverse) {
    const double r = v - k.y[bin], bend = d0 + d1 - 2 * sl;
    const double a = h * (sl - d0) + r * bend, b = h * d0 - r * bend, c = -sl * r;
    theta = 2 * c / (-b - std::sqrt(std::max(0.0, b * b - 4 * a * c)));
  } else {
    theta = (v - k.x[bin]) / w;
  }
  const double t = theta * (1 - theta), den = sl + (d0 + d1 - 2 * sl) * t;
  const double slope = sl * sl * (d1 * theta * theta + 2 * sl * t + d0 * (1 - theta) * (1 - theta)) / (den * den);
  if (reverse) return {k.x[bin] + theta * w, -std::log(slope)};
  return {k.y[bin] + h * (sl * theta * theta + d0 * t) / den, std::log(slope)};
}

// The reference outputs of a float64 case.
Pair reference_outputs(const Case& c) {
  const at::Tensor x = c.x.contiguous(), p = c.params.contiguous();
  at::Tensor y = x.clone(), logdet = at::zeros({x.size(0)}, at::kDouble);
  const int64_t numel = x.numel() / x.size(0);
  for (int64_t b = 0; b < x.size(0); ++b)
    for (int64_t n = 0; n < numel; ++n) {
      if (!c.selected(n)) continue;
      const Knots k = knots_of(p.data_ptr<double>() + c.param_index(b, n, 0), c.inner, c.bins, c.shape);
      const auto [out, term] = reference_spline(x.data_ptr<double>()[b * numel + n], k, c.bins, c.shape, c.reverse);
      y.data_ptr<double>()[b * numel + n] = out;
      logdet.data_ptr<double>()[b] += term;
    }
  return {y, logdet};
}

double max_abs(const at::Tensor& a) { return a.numel() ? a.abs().max().item<double>() : 0.0; }

std::string name_of(Mask mask, bool reverse, int bins) {
  const char* m = mask == Mask::kHalf ? "half" : mask == Mask::kCheckerboard ? "checkerboard" : "mask";
  return std::string(m) + (reverse ? " inverse" : " forward") + " bins=" + std::to_string(bins);
}

void test_against_reference() {
  for (Mask mask : {Mask::kHalf, Mask::kCheckerboard, Mask::kTensor})
    for (bool reverse : {false, true})
      for (int bins : {1, 2, 5, 8, 32})
        for (double scale : {0.01, 1.0, 8.0}) {
          // Vectors (R = 1), channels of 30 (chunks across channels) and of 130 (chunks inside one channel too).
          const std::vector<int64_t> sizes = mask == Mask::kHalf && bins == 5 ? std::vector<int64_t>{3, 7}
                                             : bins == 8                      ? std::vector<int64_t>{2, 3, 10, 13}
                                                                              : std::vector<int64_t>{3, 3, 5, 6};
          const Case c = make_case(sizes, mask, bins, reverse, at::kDouble, scale, 7 + bins);
          auto [y, logdet] = c.forward(c.x, c.params);
          auto [want_y, want_logdet] = reference_outputs(c);
          const std::string what = name_of(mask, reverse, bins) + " scale=" + std::to_string(scale);
          check(max_abs(y - want_y) < 1e-11, what + ": y matches the array formula");
          check(max_abs(logdet - want_logdet) < 1e-10 * (1 + max_abs(want_logdet)), what + ": log-det matches");
        }
}

// Inputs exactly on the knots map onto the height knots; +-bound onto themselves; outside is the identity, with
// log-det term 0 and no parameter gradient.
void test_knots_and_bounds() {
  const int bins = 6;
  for (bool reverse : {false, true}) {
    Case c = make_case({2, 2, 1, 1}, Mask::kHalf, bins, reverse, at::kDouble, 1.5, 3);
    // One transformed element a sample (channel 1): walk its knots and some outside points, one call per input.
    const at::Tensor p = c.params.contiguous();
    const Knots k = knots_of(p.data_ptr<double>(), c.inner, bins, c.shape);
    std::vector<double> inputs = reverse ? k.y : k.x;
    for (double v : {-3.0, 3.0, -3.5, 3.5, 1e9, -std::numeric_limits<double>::infinity()}) inputs.push_back(v);
    for (size_t i = 0; i < inputs.size(); ++i) {
      at::Tensor x = c.x.clone();
      x.select(0, 0).select(0, 1).fill_(inputs[i]);
      x.select(0, 1).select(0, 1).fill_(inputs[i]);
      Case ci = c;
      ci.x = x;
      auto [y, logdet] = ci.forward(x, c.params);
      const double out = y[0][1][0][0].item<double>();
      if (i <= static_cast<size_t>(bins)) {
        const double want = reverse ? k.x[i] : k.y[i];
        check(std::abs(out - want) < 1e-12, "knot " + std::to_string(i) + (reverse ? " (inverse)" : "") +
                                                " maps onto its knot: " + std::to_string(out) + " vs " +
                                                std::to_string(want));
      } else {
        const bool outside = std::abs(inputs[i]) > 3.0;
        check(outside ? out == inputs[i] : std::abs(out - inputs[i]) < 1e-12, "the bound and beyond: identity");
        if (outside) {
          check(logdet[0].item<double>() == 0.0, "outside the bound the log-det term is 0");
          auto [gx, gp] = ci.backward(at::ones_like(x), at::ones({2}, at::kDouble));
          check(gx[0][1][0][0].item<double>() == 1.0, "outside the bound the gradient passes through");
          check(max_abs(gp.select(0, 0)) == 0.0, "outside the bound no parameter gets a gradient");
        }
      }
    }
  }
}

// inverse(forward(x)) == x to rounding: the error of y (a few ulp of |y|) divided by the slope at x, which the
// independent formula gives, plus a few ulp of |x|; and the two log-dets negate.
void test_round_trips() {
  for (Mask mask : {Mask::kHalf, Mask::kCheckerboard, Mask::kTensor})
    for (at::ScalarType dtype : {at::kDouble, at::kFloat})
      for (int bins : {3, 8, 20}) {
        const Case f = make_case({4, 4, 9, 7}, mask, bins, false, dtype, 2.0, 11);
        auto [y, logdet] = f.forward(f.x, f.params);
        Case r = f;
        r.layout[nf_kernels::kSplineFieldReverse] = 1;
        auto [back, inverse_logdet] = r.forward(y, f.params);
        const double eps = dtype == at::kDouble ? std::numeric_limits<double>::epsilon()
                                                : std::numeric_limits<float>::epsilon();
        const at::Tensor x64 = f.x.to(at::kDouble).contiguous(), p64 = f.params.to(at::kDouble).contiguous();
        const at::Tensor y64 = y.to(at::kDouble).contiguous(), back64 = back.to(at::kDouble).contiguous();
        const int64_t numel = x64.numel() / x64.size(0);
        int bad = 0;
        for (int64_t b = 0; b < x64.size(0); ++b)
          for (int64_t n = 0; n < numel; ++n) {
            const int64_t i = b * numel + n;
            const double xv = x64.data_ptr<double>()[i], yv = y64.data_ptr<double>()[i];
            double slope = 1;
            if (f.selected(n)) {
              const Knots k = knots_of(p64.data_ptr<double>() + f.param_index(b, n, 0), f.inner, bins, f.shape);
              slope = std::exp(reference_spline(xv, k, bins, f.shape, false).second);
            }
            const double tol = 16 * eps * (1 + std::abs(yv)) / slope + 4 * eps * (1 + std::abs(xv));
            bad += !(std::abs(back64.data_ptr<double>()[i] - xv) <= tol);
          }
        const double ld_tol = (dtype == at::kDouble ? 1e-9 : 1e-3) * (1 + max_abs(logdet));
        const std::string what = name_of(mask, false, bins) + (dtype == at::kDouble ? " float64" : " float32");
        check(bad == 0, what + ": inverse(forward(x)) == x to rounding (" + std::to_string(bad) + " elements off)");
        check(max_abs(logdet + inverse_logdet) < ld_tol, what + ": the log-dets negate");
      }
}

// The backward against central differences of L = sum(gy * y) + sum(gl * logdet), for every input and every
// parameter. Parameters of kept elements hold NaN: nothing may read them, and their gradient must be 0.
void test_finite_differences() {
  for (Mask mask : {Mask::kHalf, Mask::kCheckerboard, Mask::kTensor})
    for (bool reverse : {false, true})
      for (int bins : {1, 3, 4}) {
        Case c = make_case({2, 3, 2, 3}, mask, bins, reverse, at::kDouble, 1.0, 5 + bins);
        const int64_t numel = c.x.numel() / 2, per = 3 * bins - 1;
        for (int64_t b = 0; b < 2; ++b)
          for (int64_t n = c.lo; n < c.hi; ++n)
            if (!c.selected(n))
              for (int j = 0; j < per; ++j) c.params.view(-1)[c.param_index(b, n, j)] = NAN;
        const at::Tensor gy = at::randn_like(c.x), gl = at::randn({2}, at::kDouble);
        auto loss = [&](const at::Tensor& xx, const at::Tensor& pp) {
          auto [y, logdet] = c.forward(xx, pp);
          return (gy * y).sum().item<double>() + (gl * logdet).sum().item<double>();
        };
        auto [gx, gp] = c.backward(gy, gl);
        const double eps = 1e-6;
        double worst_x = 0, worst_p = 0;
        bool kept_zero = true, finite = true;
        for (int64_t i = 0; i < c.x.numel(); ++i) {
          at::Tensor xp = c.x.clone(), xm = c.x.clone();
          xp.view(-1)[i] += eps, xm.view(-1)[i] -= eps;
          const double fd = (loss(xp, c.params) - loss(xm, c.params)) / (2 * eps);
          worst_x = std::max(worst_x, std::abs(fd - gx.view(-1)[i].item<double>()) / (1 + std::abs(fd)));
        }
        for (int64_t b = 0; b < 2; ++b)
          for (int64_t n = c.lo; n < c.hi; ++n)
            for (int j = 0; j < per; ++j) {
              const int64_t i = c.param_index(b, n, j);
              const double got = gp.view(-1)[i].item<double>();
              if (!c.selected(n)) {
                kept_zero = kept_zero && got == 0.0;
                continue;
              }
              at::Tensor pp = c.params.clone(), pm = c.params.clone();
              pp.view(-1)[i] += eps, pm.view(-1)[i] -= eps;
              const double fd = (loss(c.x, pp) - loss(c.x, pm)) / (2 * eps);
              finite = finite && std::isfinite(fd);
              worst_p = std::max(worst_p, std::abs(fd - got) / (1 + std::abs(fd)));
            }
        const std::string what = name_of(mask, reverse, bins);
        (void)numel;
        check(finite, what + ": the loss is finite although kept elements' parameters are NaN");
        check(worst_x < 1e-6, what + ": grad_x matches finite differences (" + std::to_string(worst_x) + ")");
        check(worst_p < 1e-6, what + ": every parameter's gradient matches finite differences (" +
                                  std::to_string(worst_p) + ")");
        check(kept_zero, what + ": kept elements' parameters get gradient 0");
      }
}

void test_logdet_does_not_depend_on_threads() {
  // 2 * 9 * 100 * 100 = 180000 elements a sample, transformed half: several tiles a sample.
  const Case c = make_case({3, 4, 150, 100}, Mask::kHalf, 8, false, at::kFloat, 1.0, 2);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto [y1, l1] = c.forward(c.x, c.params);
  at::set_num_threads(std::max(2, threads));
  auto [y2, l2] = c.forward(c.x, c.params);
  at::set_num_threads(threads);
  check(at::equal(y1, y2) && at::equal(l1, l2), "y and the log-det are the same bits with 1 and 2 threads");
}

// The spline kernel variants this CPU runs: baseline, and AVX2 and AVX-512 where built and supported.
std::vector<const nf_kernels::cpu::SplineTileKernels*> runnable_spline_variants() {
  namespace cpu = nf_kernels::cpu;
  std::vector<const cpu::SplineTileKernels*> variants = {cpu::baseline_spline_tile_kernels()};
#if defined(__x86_64__) || defined(__i386__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx2 && cpu::avx2_spline_tile_kernels() != nullptr) variants.push_back(cpu::avx2_spline_tile_kernels());
  if (avx512 && cpu::avx512_spline_tile_kernels() != nullptr) variants.push_back(cpu::avx512_spline_tile_kernels());
#endif
  return variants;
}

// Every instruction set this CPU runs computes the same tiles (to rounding: FMA contraction differs).
void test_instruction_sets_agree() {
  namespace cpu = nf_kernels::cpu;
  const std::vector<const cpu::SplineTileKernels*> variants = runnable_spline_variants();
  std::printf("CPU spline kernels: %s (of %zu variants run here)\n", cpu::selected_spline_tile_kernels().isa,
              variants.size());
  for (bool reverse : {false, true}) {
    const Case c = make_case({1, 2, 30, 40}, Mask::kHalf, 8, reverse, at::kFloat, 1.0, 4);
    nf_kernels::SplineLayout layout{};
    layout.select.batch = 1, layout.select.numel = c.x.numel(), layout.select.lo = c.lo, layout.select.hi = c.hi;
    layout.select.pattern = nf_kernels::kPatternRange;
    layout.params_stride = c.layout[nf_kernels::kSplineFieldParamsStride], layout.inner = c.inner, layout.bins = 8;
    const nf_kernels::SplineConfig config{3.0, 1e-3, 1e-3, 1e-3, reverse};
    at::Tensor reference;
    double reference_sum = 0;
    for (const cpu::SplineTileKernels* variant : variants) {
      at::Tensor y = at::empty_like(c.x);
      const cpu::SplineForwardTensors io{c.x.const_data_ptr(), nf_kernels::DType::kFloat32, c.params.const_data_ptr(),
                                         nf_kernels::DType::kFloat32, y.mutable_data_ptr()};
      const double sum = variant->forward_tile(layout, config, io, 0, 0, c.x.numel());
      if (!reference.defined()) {
        reference = y, reference_sum = sum;
        continue;
      }
      check(max_abs(y - reference) < 1e-4 && std::abs(sum - reference_sum) < 1e-3 * (1 + std::abs(reference_sum)),
            std::string(variant->isa) + " spline kernels agree with baseline");
    }
  }
}

// Short samples several to a chunk (packs_samples): every variant gives each sample the same bits as its own tile,
// y, log-det sum, grad_x and the parameters' gradients, over a batch of several chunks ending in a partial one.
void test_packed_samples_equal_their_own_tiles() {
  namespace cpu = nf_kernels::cpu;
  const std::vector<const cpu::SplineTileKernels*> variants = runnable_spline_variants();
  for (bool reverse : {false, true}) {
    const Case c = make_case({37, 10}, Mask::kHalf, 6, reverse, at::kFloat, 1.0, 5);
    nf_kernels::SplineLayout layout{};
    const int64_t batch = c.x.size(0), numel = c.x.numel() / batch;
    layout.select.batch = batch, layout.select.numel = numel, layout.select.lo = c.lo, layout.select.hi = c.hi;
    layout.select.pattern = nf_kernels::kPatternRange;
    layout.params_stride = c.layout[nf_kernels::kSplineFieldParamsStride], layout.inner = c.inner, layout.bins = 6;
    check(cpu::packs_samples(layout), "a [37, 10] half coupling packs its samples");
    const nf_kernels::SplineConfig config{3.0, 1e-3, 1e-3, 1e-3, reverse};
    const at::Tensor grad_y = at::randn_like(c.x), grad_logdet = at::randn({batch});
    for (const cpu::SplineTileKernels* variant : variants) {
      const auto f32 = nf_kernels::DType::kFloat32;
      at::Tensor y_packed = at::empty_like(c.x), y_tiles = at::empty_like(c.x);
      std::vector<double> sums(batch);
      variant->forward_samples(layout, config, {c.x.const_data_ptr(), f32, c.params.const_data_ptr(), f32,
                                                y_packed.mutable_data_ptr()}, 0, batch, sums.data());
      bool same_sums = true;
      for (int64_t b = 0; b < batch; ++b) {
        const double sum = variant->forward_tile(
            layout, config, {c.x.const_data_ptr(), f32, c.params.const_data_ptr(), f32, y_tiles.mutable_data_ptr()},
            b, 0, numel);
        same_sums = same_sums && sum == sums[b];
      }
      const std::string what = std::string(variant->isa) + (reverse ? " inverse" : " forward");
      check(at::equal(y_packed, y_tiles) && same_sums, what + ": packed samples give their own tiles' y and log-det");
      at::Tensor gx_packed = at::empty_like(c.x), gx_tiles = at::empty_like(c.x);
      at::Tensor gp_packed = at::empty_like(c.params), gp_tiles = at::empty_like(c.params);
      auto tensors = [&](at::Tensor& gx, at::Tensor& gp) {
        return cpu::SplineBackwardTensors{grad_y.const_data_ptr(), grad_logdet.const_data_ptr(), c.x.const_data_ptr(),
                                          f32, c.params.const_data_ptr(), f32, gx.mutable_data_ptr(),
                                          gp.mutable_data_ptr()};
      };
      variant->backward_samples(layout, config, tensors(gx_packed, gp_packed), 0, batch);
      for (int64_t b = 0; b < batch; ++b) variant->backward_tile(layout, config, tensors(gx_tiles, gp_tiles), b, 0, numel);
      check(at::equal(gx_packed, gx_tiles) && at::equal(gp_packed, gp_tiles),
            what + ": packed samples give their own tiles' gradients");
    }
  }
}

template <class F>
bool refuses(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const c10::ValueError& e) {
    return std::string(e.what()).find(needle) != std::string::npos;
  } catch (...) {
    return false;
  }
  return false;
}

void test_refusals() {
  const Case c = make_case({2, 4}, Mask::kHalf, 33, false, at::kFloat, 1.0, 1);
  check(refuses([&] { c.forward(c.x, c.params); }, "bins=33"), "33 bins are refused by name");
  Case bad = make_case({2, 4}, Mask::kHalf, 4, false, at::kFloat, 1.0, 1);
  check(refuses([&] { bad.forward(bad.x, bad.params.narrow(1, 0, 11)); }, "params has shape"),
        "params of the wrong size are refused");
  bad.shape.bound = -1;
  check(refuses([&] { bad.forward(bad.x, bad.params); }, "bound"), "a negative bound is refused");
  bad.shape.bound = 3, bad.shape.min_bin_width = 0.3;
  check(refuses([&] { bad.forward(bad.x, bad.params); }, "min_bin_width"), "min_bin_width * bins >= 1 is refused");
}

}  // namespace

int main() {
  test_against_reference();
  test_knots_and_bounds();
  test_round_trips();
  test_finite_differences();
  test_logdet_does_not_depend_on_threads();
  test_instruction_sets_agree();
  test_packed_samples_equal_their_own_tiles();
  test_refusals();
  std::printf(failures ? "%d check(s) failed\n" : "all spline checks passed\n", failures);
  return failures ? 1 : 0;
}
