// C++ tests of the extension, run by ctest (CMakeLists.txt): the vectorizable float math against libm, the
// float16/bfloat16 conversions against c10's, and the registered ops against the SPEC formulas, per
// instruction set, with a log-det that must not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../cpu/half_bits.h"
#include "../cpu/tile_kernels.h"
#include "../vector_math.h"

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

// Distance in units in the last place of the float result, measured against a double computation.
double ulps(float got, double want) {
  if (std::isnan(want)) return std::isnan(got) ? 0 : 1e9;
  const float rounded = static_cast<float>(want);  // may overflow to inf: then so must the result
  if (std::isinf(rounded) || std::isinf(got)) return got == rounded ? 0 : 1e9;
  const double unit = std::max(static_cast<double>(std::abs(std::nextafter(rounded, INFINITY) - rounded)),
                               static_cast<double>(std::numeric_limits<float>::denorm_min()));
  return std::abs(static_cast<double>(got) - want) / unit;
}

template <class F, class G>
void check_function(const char* name, F fast, G exact, float lo, float hi, double max_ulps) {
  double worst = 0;
  float worst_at = 0;
  const int steps = 400000;
  for (int i = 0; i <= steps; ++i) {
    const float v = lo + (hi - lo) * static_cast<float>(i) / steps;
    const double err = ulps(fast(v), exact(static_cast<double>(v)));
    if (err > worst) worst = err, worst_at = v;
  }
  for (float v : {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-30f, -1e-30f, 1e30f, -1e30f}) {
    if (v < lo || v > hi) continue;
    const double err = ulps(fast(v), exact(static_cast<double>(v)));
    if (err > worst) worst = err, worst_at = v;
  }
  std::printf("%-6s max error %.2f ulp (at %g)\n", name, worst, worst_at);
  check(worst <= max_ulps, std::string(name) + " is within " + std::to_string(max_ulps) + " ulp of libm");
}

void test_vector_math() {
  namespace vm = nf_kernels::vector_math;
  const float big = std::numeric_limits<float>::infinity();
  check_function("exp", [](float v) { return vm::exp(v); }, [](double v) { return std::exp(v); }, -110.0f, 90.0f, 2);
  check_function("tanh", [](float v) { return vm::tanh(v); }, [](double v) { return std::tanh(v); }, -12.0f, 12.0f, 4);
  check_function("atan", [](float v) { return vm::atan(v); }, [](double v) { return std::atan(v); }, -50.0f, 50.0f, 3);
  check_function("log1p", [](float v) { return vm::log1p(v); }, [](double v) { return std::log1p(v); }, -0.999f, 50.0f, 3);
  check(std::isnan(vm::exp(NAN)) && vm::exp(big) == big && vm::exp(-big) == 0.0f, "exp of NaN, +inf, -inf");
  check(vm::tanh(big) == 1.0f && vm::tanh(-big) == -1.0f && std::isnan(vm::tanh(NAN)), "tanh of +-inf and NaN");
  check(std::isnan(vm::atan(NAN)) && std::abs(vm::atan(big) - 1.5707964f) < 1e-7f, "atan of NaN and inf");
  check(vm::log1p(-1.0f) == -big && std::isnan(vm::log1p(-2.0f)) && vm::log1p(big) == big, "log1p specials");
}

void test_half_conversions() {
  namespace cpu = nf_kernels::cpu;
  int bad_half = 0, bad_bf16 = 0;
  for (uint32_t word = 0; word <= 0xffff; ++word) {
    const float fast_h = cpu::float16_to_float(static_cast<uint16_t>(word));
    const float ref_h = static_cast<float>(c10::Half(static_cast<uint16_t>(word), c10::Half::from_bits()));
    bad_half += !(fast_h == ref_h || (std::isnan(fast_h) && std::isnan(ref_h)));
    const float fast_b = cpu::bfloat16_to_float(static_cast<uint16_t>(word));
    const float ref_b = static_cast<float>(c10::BFloat16(static_cast<uint16_t>(word), c10::BFloat16::from_bits()));
    bad_bf16 += !(fast_b == ref_b || (std::isnan(fast_b) && std::isnan(ref_b)));
  }
  check(bad_half == 0 && bad_bf16 == 0, "16-bit -> float conversions match c10 for all 65536 words");
  std::mt19937 rng(0);
  std::uniform_int_distribution<uint32_t> any_bits;
  int mismatches = 0;
  for (int i = 0; i < 2000000; ++i) {
    uint32_t bits = any_bits(rng);
    if (i % 4 == 0) bits = (bits & 0x87ffffffu) | 0x30000000u;  // many near the float16 range, subnormals included
    float value;
    std::memcpy(&value, &bits, sizeof value);
    const uint16_t want_h = c10::Half(value).x, want_b = c10::BFloat16(value).x;
    const uint16_t got_h = cpu::float_to_float16(value), got_b = cpu::float_to_bfloat16(value);
    if (std::isnan(value)) {
      mismatches += (got_h & 0x7c00u) != 0x7c00u || (got_h & 0x03ffu) == 0;
      mismatches += (got_b & 0x7f80u) != 0x7f80u || (got_b & 0x007fu) == 0;
    } else {
      mismatches += (got_h != want_h) + (got_b != want_b);
    }
  }
  check(mismatches == 0, "float -> float16/bfloat16 rounding matches c10 (" + std::to_string(mismatches) + " mismatches)");
}

using ForwardOp = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                     const std::optional<at::Tensor>&, c10::ArrayRef<int64_t>,
                                                     double, bool);

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

void test_ops() {
  auto forward = c10::Dispatcher::singleton().findSchemaOrThrow("nf_kernels_ext::coupling_forward", "").typed<ForwardOp>();
  std::printf("CPU kernels: %s\n", nf_kernels::cpu::selected_tile_kernels().isa);
  at::manual_seed(0);
  // "half" mask on [B, C, H, W] = [3, 5, 40, 300]: channels [2, 5) transformed, 36000 elements a sample (3 tiles).
  const int64_t batch = 3, channels = 5, inner = 40 * 300, numel = channels * inner;
  const int64_t lo = 2 * inner, hi = numel, span = hi - lo;
  const at::Tensor x = at::randn({batch, channels, 40, 300}, at::kDouble);
  const at::Tensor h = at::randn({batch, 6, 40, 300}, at::kDouble);
  const at::Tensor s = h.slice(1, 0, 3), t = h.slice(1, 3, 6);
  // The packed layout, in kLayoutFieldNames order: lo, hi, h_stride, t_offset, pattern, parity, width, plane,
  // scale, shift_first, reverse.
  const std::vector<int64_t> half_layout{lo, hi, 2 * span, span, nf_kernels::kPatternRange, 0, 0, 0, nf_kernels::kExp, 0, 0};
  auto [y, logdet] = forward.call(x, h, std::nullopt, half_layout, 2.0, false);
  const at::Tensor want_y = at::cat({x.slice(1, 0, 2), x.slice(1, 2, 5) * s.exp() + t}, 1);
  check(max_abs(y - want_y) < 1e-12, "forward, half mask, exp: y = x * exp(s) + t");
  check(max_abs(logdet - s.flatten(1).sum(1)) < 1e-10, "forward, half mask, exp: logdet = sum s");

  // Checkerboard, tanh, shift first, float32; then the log-det's bits must not depend on the thread count.
  const at::Tensor xc = at::randn({4, 3, 64, 96}, at::kFloat), hc = at::randn({4, 6, 64, 96}, at::kFloat);
  const int64_t nc = 3 * 64 * 96;
  const std::vector<int64_t> checkerboard_layout{0, nc, 2 * nc, nc, nf_kernels::kPatternCheckerboard, 0, 96, 64 * 96,
                                                 nf_kernels::kTanh, 1, 0};
  auto call_checkerboard = [&] { return forward.call(xc, hc, std::nullopt, checkerboard_layout, 1.5, false); };
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto [y1, logdet1] = call_checkerboard();
  at::set_num_threads(std::max(2, threads));
  auto [y2, logdet2] = call_checkerboard();
  at::set_num_threads(threads);
  check(at::equal(logdet1, logdet2) && at::equal(y1, y2), "results are the same bits with 1 and 2 threads");
  const at::Tensor i = at::arange(64).view({64, 1}), j = at::arange(96).view({1, 96});
  const at::Tensor transformed = ((i + j) % 2 == 0).expand({3, 64, 96});
  const at::Tensor a = 1.5 * at::tanh(hc.slice(1, 0, 3) / 1.5);
  const at::Tensor want_c = at::where(transformed, (xc + hc.slice(1, 3, 6)) * a.exp(), xc);
  const at::Tensor want_logdet = at::where(transformed, a, at::zeros_like(a)).flatten(1).sum(1);
  check(max_abs(y1 - want_c) / max_abs(want_c) < 1e-6, "forward, checkerboard, tanh, shift_first");
  check(max_abs(logdet1 - want_logdet) / max_abs(want_logdet) < 1e-5, "checkerboard log-det");
}

// The tile kernels of every instruction set this build has and this CPU runs, baseline first.
std::vector<const nf_kernels::cpu::TileKernels*> runnable_variants() {
  std::vector<const nf_kernels::cpu::TileKernels*> variants = {nf_kernels::cpu::baseline_tile_kernels()};
#if defined(__x86_64__) || defined(__i386__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx2 && nf_kernels::cpu::avx2_tile_kernels() != nullptr) variants.push_back(nf_kernels::cpu::avx2_tile_kernels());
  if (avx512 && nf_kernels::cpu::avx512_tile_kernels() != nullptr)
    variants.push_back(nf_kernels::cpu::avx512_tile_kernels());
#endif
  return variants;
}

// Every instruction set this CPU runs computes the same tiles (to rounding: FMA contraction differs).
void test_instruction_sets_agree() {
  const at::Tensor x = at::randn({1, 4, 50, 50}), h = at::randn({1, 4, 50, 50});
  const int64_t numel = 10000;
  const nf_kernels::FlatLayout layout{1, numel, 5000, numel, 10000, 5000, nf_kernels::kPatternRange, 0, 0, 0, nullptr};
  const nf_kernels::CouplingConfig config{nf_kernels::kSigmoid, 2.0, false, true};
  at::Tensor reference;
  double reference_sum = 0;
  for (const nf_kernels::cpu::TileKernels* variant : runnable_variants()) {
    at::Tensor y = at::empty_like(x);
    const nf_kernels::cpu::ForwardTensors io{x.const_data_ptr(), nf_kernels::DType::kFloat32, h.const_data_ptr(),
                                             nf_kernels::DType::kFloat32, y.mutable_data_ptr()};
    const double sum = variant->forward_tile(layout, config, io, 0, 0, numel);
    if (!reference.defined()) {
      reference = y, reference_sum = sum;
      continue;
    }
    check(max_abs(y - reference) < 1e-5 && std::abs(sum - reference_sum) < 1e-3 * std::abs(reference_sum) + 1e-3,
          std::string(variant->isa) + " kernels agree with baseline");
  }
}

// The log-det of full tiles whose terms cancel: scale "exp" makes the terms s_raw themselves (nothing is rounded
// before the sum), the first half positive and the second half negative. The pairwise order depends on the
// shapes alone, so every instruction set gives the same bits. The error, in units of float32's epsilon times
// sum_k |a_k|, averages about 0.03 (running sums in 16 interleaved lanes, which this replaced: about 0.3).
void test_logdet_summation() {
  using nf_kernels::cpu::TileKernels;
  const int64_t numel = nf_kernels::cpu::kTileElements, tiles = 32;
  // One sample, all of it transformed: s_raw at h[n], the shift at h[numel + n].
  const nf_kernels::FlatLayout layout{1, numel, 0, numel, 2 * numel, numel, nf_kernels::kPatternRange,
                                      0, 0, 0, nullptr};
  const nf_kernels::CouplingConfig config{nf_kernels::kExp, 2.0, false, false};
  const at::Tensor sign = at::cat({at::ones({numel / 2}), -at::ones({numel / 2})}), x = at::zeros({numel});
  const std::vector<const TileKernels*> variants = runnable_variants();
  std::vector<double> mean_error(variants.size(), 0.0);
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const at::Tensor s = (10 + 10 * at::rand({numel})) * sign, h = at::cat({s, at::zeros_like(s)});
    const at::Tensor s64 = s.to(at::kDouble);
    const double exact = s64.sum().item<double>(), condition = s64.abs().sum().item<double>();
    at::Tensor y = at::empty_like(x);
    const nf_kernels::cpu::ForwardTensors io{x.const_data_ptr(), nf_kernels::DType::kFloat32, h.const_data_ptr(),
                                             nf_kernels::DType::kFloat32, y.mutable_data_ptr()};
    double baseline_sum = 0;
    for (size_t v = 0; v < variants.size(); ++v) {
      const double sum = variants[v]->forward_tile(layout, config, io, 0, 0, numel);
      if (v == 0) baseline_sum = sum;
      check(sum == baseline_sum, std::string(variants[v]->isa) + " log-det has the baseline's bits");
      mean_error[v] += std::abs(sum - exact) / condition / std::numeric_limits<float>::epsilon() / tiles;
    }
  }
  for (size_t v = 0; v < variants.size(); ++v) {
    std::printf("%-8s log-det of cancelling terms: mean error %.3f eps x sum|a|\n", variants[v]->isa, mean_error[v]);
    check(mean_error[v] <= 0.1, std::string(variants[v]->isa) + " log-det is accurate when its terms cancel");
  }
}

}  // namespace

int main() {
  test_vector_math();
  test_half_conversions();
  test_ops();
  test_instruction_sets_agree();
  test_logdet_summation();
  std::printf(failures ? "%d check(s) failed\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
