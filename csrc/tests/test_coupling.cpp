// C++ tests of the extension, run by ctest (CMakeLists.txt): the vectorizable float math against libm, the
// float16/bfloat16 conversions against c10's, and the registered ops against the SPEC formulas, per
// instruction set, with a log-det that must not depend on the thread count; and the CUDA kernels' index arithmetic,
// which runs here on the host (the kernels themselves need a GPU).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../coupling_layout.h"
#include "checks.h"
#include "../cpu/half_bits.h"
#include "../cpu/tile_kernels.h"
#include "../cuda/block_exchange.h"
#include "../cuda/work_split.h"
#include "../vector_math.h"

namespace {

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
  check_function("log", [](float v) { return vm::log(v); }, [](double v) { return std::log(v); }, 1e-6f, 50.0f, 3);
  check_function("log", [](float v) { return vm::log(v); }, [](double v) { return std::log(v); }, 0.0f, 1e-37f, 3);
  check(std::isnan(vm::exp(NAN)) && vm::exp(big) == big && vm::exp(-big) == 0.0f, "exp of NaN, +inf, -inf");
  check(vm::tanh(big) == 1.0f && vm::tanh(-big) == -1.0f && std::isnan(vm::tanh(NAN)), "tanh of +-inf and NaN");
  check(std::isnan(vm::atan(NAN)) && std::abs(vm::atan(big) - 1.5707964f) < 1e-7f, "atan of NaN and inf");
  check(vm::log1p(-1.0f) == -big && std::isnan(vm::log1p(-2.0f)) && vm::log1p(big) == big, "log1p specials");
  check(vm::log(0.0f) == -big && std::isnan(vm::log(-1.0f)) && std::isnan(vm::log(NAN)) && vm::log(big) == big,
        "log specials");
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
                                                     double, double, const std::optional<at::Tensor>&, bool,
                                                     const std::optional<at::Tensor>&);

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
  // scale, shift_first, reverse, s_offset, pair_inner.
  const std::vector<int64_t> half_layout{lo, hi, 2 * span, span, nf_kernels::kPatternRange, 0, 0, 0, nf_kernels::kExp,
                                         0, 0, 0, 0};
  auto [y, logdet] = forward.call(x, h, std::nullopt, half_layout, 2.0, 0.0, std::nullopt, false, std::nullopt);
  const at::Tensor want_y = at::cat({x.slice(1, 0, 2), x.slice(1, 2, 5) * s.exp() + t}, 1);
  check(max_abs(y - want_y) < 1e-12, "forward, half mask, exp: y = x * exp(s) + t");
  check(max_abs(logdet - s.flatten(1).sum(1)) < 1e-10, "forward, half mask, exp: logdet = sum s");

  // Checkerboard, tanh, shift first, float32; then the log-det's bits must not depend on the thread count.
  const at::Tensor xc = at::randn({4, 3, 64, 96}, at::kFloat), hc = at::randn({4, 6, 64, 96}, at::kFloat);
  const int64_t nc = 3 * 64 * 96;
  const std::vector<int64_t> checkerboard_layout{0, nc, 2 * nc, nc, nf_kernels::kPatternCheckerboard, 0, 96, 64 * 96,
                                                 nf_kernels::kTanh, 1, 0, 0, 0};
  auto call_checkerboard = [&] {
    return forward.call(xc, hc, std::nullopt, checkerboard_layout, 1.5, 0.0, std::nullopt, false, std::nullopt);
  };
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

  // A compact h (pattern "gather") in (t, s_raw) channel pairs of one element, zuko's layout, with pyro's clip: the
  // transformed elements 1, 4, 5 of 7 take positions 0, 1, 2, so s_raw of position p at h[2p + 1], t at h[2p].
  const at::Tensor xg = at::randn({2, 7}, at::kDouble), hg = at::randn({2, 6}, at::kDouble);
  const at::Tensor h_index = at::tensor({-1, 0, -1, -1, 1, 2, -1}, at::kInt);
  const std::vector<int64_t> gather_layout{0, 7, 6, 0, nf_kernels::kPatternGather, 0, 0, 0, nf_kernels::kClip,
                                           0, 0, 1, 1};
  auto [yg, logdet_g] = forward.call(xg, hg, std::nullopt, gather_layout, 0.5, -0.25, h_index, false, std::nullopt);
  const at::Tensor sg = hg.slice(1, 1, 6, 2).clamp(-0.25, 0.5), tg = hg.slice(1, 0, 6, 2);
  at::Tensor want_g = xg.clone();
  const at::Tensor where = at::tensor({1, 4, 5}, at::kLong);
  want_g.index_copy_(1, where, xg.index_select(1, where) * sg.exp() + tg);
  check(max_abs(yg - want_g) < 1e-12, "forward, compact h in channel pairs, clip: y");
  check(max_abs(logdet_g - sg.sum(1)) < 1e-12, "forward, compact h in channel pairs, clip: logdet");
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


// The division-free index helpers of the CUDA kernels (coupling_layout.h): fast_div against the / operator, and
// checkerboard_bits against is_transformed, on its 32- and 64-bit paths, for planes smaller than a group, odd and
// even sides, groups that start anywhere (the element path's misaligned ones too) and flat indices past 2^32.
template <class U>
void check_fast_div(U d, U n, int& bad) {
  bad += nf_kernels::fast_div(nf_kernels::make_fast_div(d), n) != n / d;
}

void test_fast_div() {
  std::mt19937_64 rng(1);
  int bad = 0;
  const uint32_t max32 = 0xffffffffu;
  const uint64_t max64 = ~uint64_t(0);
  for (uint32_t d = 1; d < 2000; ++d)
    for (uint32_t n : {0u, 1u, d - 1, d, d + 1, 2 * d - 1, 2 * d, 12345u * d + 7, max32 - 1, max32}) check_fast_div(d, n, bad);
  for (int shift = 0; shift < 32; ++shift)
    for (uint32_t d : {uint32_t(1) << shift, (uint32_t(1) << shift) + 1, (uint32_t(1) << shift) - 1, max32})
      if (d != 0)
        for (uint32_t n : {0u, d, max32, max32 / 2, max32 - d}) check_fast_div(d, n, bad);
  for (int shift = 0; shift < 63; ++shift)
    for (uint64_t d : {uint64_t(1) << shift, (uint64_t(1) << shift) + 1, (uint64_t(1) << shift) - 1})
      if (d != 0)
        for (uint64_t n : {uint64_t(0), d, d - 1, max64, max64 / 3, max64 - d, uint64_t(1) << 62}) check_fast_div(d, n, bad);
  for (int i = 0; i < 200000; ++i) {
    const uint64_t d64 = rng() >> (rng() % 64), n64 = rng() >> (rng() % 64);
    if (d64 != 0) check_fast_div(d64, n64, bad);
    const uint32_t d32 = static_cast<uint32_t>(rng() >> (32 + rng() % 32)), n32 = static_cast<uint32_t>(rng());
    if (d32 != 0) check_fast_div(d32, n32, bad);
  }
  check(bad == 0, "fast_div equals integer division (" + std::to_string(bad) + " mismatches)");
}

template <int G>
int checkerboard_mismatches(const nf_kernels::FlatLayout& layout, nf_kernels::CheckerboardIndex index, int64_t n0) {
  int bad = 0;
  // The helper's selection on each of its paths (a wide path must agree on small numbers too).
  for (int path = 0; path < 3; ++path) {
    if (path == 1 && !index.narrow_flat) continue;
    index.narrow_flat = path == 1;
    index.narrow_plane = path != 0 && layout.plane < (int64_t(1) << 32);
    const uint32_t bits = nf_kernels::checkerboard_bits<G>(index, n0);
    for (int k = 0; k < G; ++k) bad += static_cast<bool>((bits >> k) & 1) != nf_kernels::is_transformed(layout, n0 + k);
  }
  return bad;
}

void test_checkerboard_index() {
  int bad = 0;
  auto layout_of = [](int64_t channels, int64_t height, int64_t width, int parity) {
    const int64_t numel = channels * height * width;
    return nf_kernels::FlatLayout{1, numel, 0, numel, 2 * numel, numel, nf_kernels::kPatternCheckerboard, parity,
                                  width, height * width, nullptr};
  };
  const int64_t sides[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 33};
  for (int64_t height : sides)
    for (int64_t width : sides)
      for (int parity = 0; parity < 2; ++parity) {
        const nf_kernels::FlatLayout layout = layout_of(3, height, width, parity);
        const nf_kernels::CheckerboardIndex index = nf_kernels::make_checkerboard_index(layout);
        for (int64_t n0 = 0; n0 + 8 <= layout.numel; ++n0) {
          bad += checkerboard_mismatches<2>(layout, index, n0);
          bad += checkerboard_mismatches<4>(layout, index, n0);
          bad += checkerboard_mismatches<8>(layout, index, n0);
        }
      }
  // Flat indices beyond 2^32 (the 64-bit division by the plane), and a plane of 2^32 elements or more (64 bits for the
  // row too): groups at random starts, near plane and row ends.
  std::mt19937_64 rng(2);
  for (auto [channels, height, width] : {std::array<int64_t, 3>{3, 65536, 32771}, std::array<int64_t, 3>{2, 70001, 65537},
                                         std::array<int64_t, 3>{5, 3, (int64_t(1) << 31) + 11}}) {
    const nf_kernels::FlatLayout layout = layout_of(channels, height, width, 1);
    const nf_kernels::CheckerboardIndex index = nf_kernels::make_checkerboard_index(layout);
    for (int i = 0; i < 20000; ++i) {
      int64_t n0 = static_cast<int64_t>(rng() % static_cast<uint64_t>(layout.numel - 8));
      if (i % 4 == 1) n0 = (n0 / layout.plane + 1) * layout.plane - static_cast<int64_t>(rng() % 9);
      if (i % 4 == 2) n0 = (n0 / width + 1) * width - static_cast<int64_t>(rng() % 9);
      if (n0 < 0 || n0 + 8 > layout.numel) continue;
      bad += checkerboard_mismatches<2>(layout, index, n0);
      bad += checkerboard_mismatches<4>(layout, index, n0);
      bad += checkerboard_mismatches<8>(layout, index, n0);
    }
  }
  check(bad == 0, "checkerboard_bits agrees with is_transformed (" + std::to_string(bad) + " mismatches)");
}


// ---- The CUDA kernels' work split and 16-byte block exchange (csrc/cuda/work_split.h, block_exchange.h) -------
//
// A team's lanes emulated on the host: a shuffle is a read of another lane's registers, a 16-byte load or store a
// read or write of an emulated sample whose every byte records where it sits.

namespace cu = nf_kernels::cuda;

void test_nonzero_bytes() {
  std::mt19937 rng(3);
  int bad = 0;
  auto check_block = [&](const uint8_t (&bytes)[16]) {
    cu::Words<16> block;
    std::memcpy(block.w, bytes, 16);  // a 16-byte load: byte k in word k / 4, bits 8 (k % 4) on (little-endian)
    uint32_t want = 0;
    for (int k = 0; k < 16; ++k) want |= static_cast<uint32_t>(bytes[k] != 0) << k;
    bad += cu::nonzero_bytes(block) != want;
  };
  for (int k = 0; k < 16; ++k)
    for (int v = 0; v < 256; ++v) {
      uint8_t bytes[16] = {};
      bytes[k] = static_cast<uint8_t>(v);
      check_block(bytes);
      for (auto& b : bytes) b = b ? 0 : 0xff;  // and every other byte set
      check_block(bytes);
    }
  for (int i = 0; i < 200000; ++i) {
    uint8_t bytes[16];
    for (auto& b : bytes) b = rng() % 2 ? 0 : static_cast<uint8_t>(rng() % 4 ? 1 : rng());
    check_block(bytes);
  }
  check(bad == 0, "nonzero_bytes: bit k set exactly where byte k of a block is nonzero (" + std::to_string(bad) +
                      " mismatches)");
}

// The byte at offset i of an emulated tensor (of one sample), and of the gradient the kernel writes there.
uint8_t data_byte(int64_t i) { return static_cast<uint8_t>(i * 131 + (i >> 8) * 7 + 1); }
uint8_t grad_byte(int64_t i) { return static_cast<uint8_t>(data_byte(i) ^ 0x5a); }

struct PassWalk {
  int walked = 0;  // layouts walked (the vector path takes them)
  int bad = 0;
};

// Every pass of a launch of `layout` on the vector path, x of kX bytes an element and h of kH: each element of the
// sample in exactly one lane's group; the h blocks each lane loads (and grad_h blocks it stores) inside the
// sample's h and aligned; each lane's s and t from the exchange equal the h of its groups; grad_h written through
// the blocks covers s and t on [lo, hi) exactly once with each group's values and nothing else; the mask bits each
// lane takes from the mask blocks equal the mask on [lo, hi). A team past the last item touches nothing.
template <int kX, int kH>
void walk_vector_passes(const nf_kernels::FlatLayout& layout, bool with_s, const std::vector<uint8_t>& mask,
                        PassWalk& walk) {
  constexpr int G = cu::group_elements(kX), U = cu::unroll_groups(kX, kH), kBytes = kH * G;
  constexpr bool kBlocks = cu::h_in_blocks(kX, kH);
  if (!cu::vector_sizes(layout, kX, kH)) return;
  ++walk.walked;
  const cu::Plan plan = cu::make_plan(layout, kX, kH);
  const int team = 1 << plan.team_log2;
  const int64_t pass = plan.pass, numel = layout.numel, h_bytes = layout.h_stride * kH;
  int& bad = walk.bad;
  bad += pass != int64_t(team) * U * G;
  std::vector<int> covered(numel, 0);
  std::vector<uint8_t> written(kBlocks ? h_bytes : 0, 0), grad_h(kBlocks ? h_bytes : 0, 0);  // stores a byte had
  auto words_at = [&](auto& words, int64_t byte, auto value_of) {  // the words of an access at a byte offset of h
    for (size_t q = 0; q < sizeof(words.w) / 4; ++q) {
      uint8_t bytes[4];
      for (int i = 0; i < 4; ++i) bytes[i] = value_of(byte + 4 * int64_t(q) + i);
      std::memcpy(&words.w[q], bytes, 4);
    }
  };
  auto h_block_in_bounds = [&](int64_t h_index) {  // a 16-byte access at this element of one sample's h
    return h_index >= 0 && (h_index + cu::h_block_elements(kH)) <= layout.h_stride && (h_index * kH) % 16 == 0;
  };
  for (int64_t chunk = 0; chunk < plan.chunks; ++chunk)
    for (int64_t round = 0; round < plan.rounds; ++round) {
      const int64_t start = (chunk * plan.rounds + round) * pass;
      std::vector<cu::TeamPass> lanes;
      for (int m = 0; m < team; ++m) lanes.push_back({start, numel, team, m, static_cast<int>(pass)});
      std::vector<std::array<uint32_t, U>> inside(team);
      for (int m = 0; m < team; ++m)
        for (int u = 0; u < U; ++u) {
          const int64_t n0 = lanes[m].template group_start<G>(u);
          const uint32_t live = cu::span_bits<G>(n0, 0, numel);
          inside[m][u] = live & cu::span_bits<G>(n0, layout.lo, layout.hi);
          const uint32_t full = (1u << G) - 1u;
          bad += (live != 0 && live != full) || (inside[m][u] != 0 && inside[m][u] != full);  // whole groups only
          for (int k = 0; k < G; ++k)
            if ((live >> k) & 1) ++covered[n0 + k];
        }
      if constexpr (kBlocks) {
        // Loads: each lane's block of t (and s), then each lane's groups through the exchange.
        std::vector<cu::Words<16>> tb(team), sb(team);
        std::vector<bool> present(team);
        for (int m = 0; m < team; ++m) {
          const int64_t n = lanes[m].block_start(cu::h_block_elements(kH));
          present[m] = cu::h_block_present(layout, lanes[m], cu::h_block_elements(kH), n);
          std::memset(tb[m].w, 0xee, 16), std::memset(sb[m].w, 0xee, 16);  // what an absent block holds
          if (!present[m]) continue;
          bad += !h_block_in_bounds(n - layout.lo + layout.t_offset) || (with_s && !h_block_in_bounds(n - layout.lo));
          words_at(tb[m], (n - layout.lo + layout.t_offset) * kH, data_byte);
          if (with_s) words_at(sb[m], (n - layout.lo) * kH, data_byte);
        }
        std::vector<std::array<cu::Words<kBytes>, U>> gs(team), gt(team);  // the gradients each lane computed
        for (int m = 0; m < team; ++m)
          for (int u = 0; u < U; ++u) {
            const int g = u * team + m;
            auto from = [&](const std::vector<cu::Words<16>>& blocks) {
              return [&, g](int q, int lane) {
                bad += lane < 0 || lane >= team || q < 0 || q >= 4;
                return blocks[lane & (team - 1)].w[q & 3];
              };
            };
            const cu::Words<kBytes> t = cu::group_from_blocks<kBytes>(g, from(tb));
            const cu::Words<kBytes> s = cu::group_from_blocks<kBytes>(g, from(sb));
            const int64_t h0 = lanes[m].template group_start<G>(u) - layout.lo;
            cu::Words<kBytes> want_t{}, want_s{};
            words_at(want_t, (h0 + layout.t_offset) * kH, data_byte);
            words_at(want_s, h0 * kH, data_byte);
            gs[m][u] = gt[m][u] = cu::Words<kBytes>{};  // zero where the kernel computes nothing
            if (!inside[m][u]) continue;
            bad += std::memcmp(t.w, want_t.w, kBytes) != 0 || (with_s && std::memcmp(s.w, want_s.w, kBytes) != 0);
            words_at(gt[m][u], (h0 + layout.t_offset) * kH, grad_byte);
            words_at(gs[m][u], h0 * kH, grad_byte);
          }
        // Stores: each lane gathers its block of grad_t (and grad_s) and writes it where its block was read.
        for (int m = 0; m < team; ++m) {
          auto from = [&](const std::vector<std::array<cu::Words<kBytes>, U>>& groups) {
            return [&](int u, int k, int lane) {
              bad += lane < 0 || lane >= team || u < 0 || u >= U || k < 0 || k >= kBytes / 4;
              return groups[lane & (team - 1)][u % U].w[k % (kBytes / 4)];
            };
          };
          const cu::Words<16> t = cu::block_from_groups<kBytes, U>(m, team, from(gt));
          const cu::Words<16> s = cu::block_from_groups<kBytes, U>(m, team, from(gs));
          if (!present[m]) continue;
          const int64_t n = lanes[m].block_start(cu::h_block_elements(kH)) - layout.lo;
          for (int pass_s = 0; pass_s < (with_s ? 2 : 1); ++pass_s) {
            const int64_t at = (n + (pass_s ? 0 : layout.t_offset)) * kH;
            if (at < 0 || at + 16 > h_bytes) {
              ++bad;
              continue;
            }
            uint8_t bytes[16];
            std::memcpy(bytes, (pass_s ? s : t).w, 16);
            for (int i = 0; i < 16; ++i) grad_h[at + i] = bytes[i], written[at + i] = written[at + i] < 9 ? written[at + i] + 1 : 9;
          }
        }
      }
      if (layout.pattern == nf_kernels::kPatternMask) {
        std::vector<uint32_t> bits(team, 0xffffu);  // what an absent block's lane holds
        for (int m = 0; m < team; ++m) {
          const int64_t n = lanes[m].block_start(cu::kMaskBlockElements);
          if (!cu::mask_block_present(layout, lanes[m], n)) continue;
          bad += n < 0 || n + 16 > numel || n % 16 != 0;
          uint8_t bytes[16];
          for (int i = 0; i < 16; ++i) bytes[i] = mask[(n + i) % numel];
          cu::Words<16> block;
          std::memcpy(block.w, bytes, 16);
          bits[m] = cu::nonzero_bytes(block);
        }
        for (int m = 0; m < team; ++m)
          for (int u = 0; u < U; ++u) {
            const uint32_t got = inside[m][u] & cu::group_mask_bits<G>(u * team + m, [&](int lane) {
              bad += lane < 0 || lane >= team;
              return bits[lane & (team - 1)];
            });
            uint32_t want = 0;
            const int64_t n0 = lanes[m].template group_start<G>(u);
            for (int k = 0; k < G; ++k)
              if ((inside[m][u] >> k) & 1) want |= static_cast<uint32_t>(mask[n0 + k] != 0) << k;
            bad += got != want;
          }
      }
    }
  for (int64_t n = 0; n < numel; ++n) bad += covered[n] != 1;
  if constexpr (kBlocks) {
    const int64_t span = (layout.hi - layout.lo) * kH;
    for (int64_t i = 0; i < h_bytes; ++i) {
      const bool in_t = i >= layout.t_offset * kH && i < layout.t_offset * kH + span;
      const bool in_s = with_s && i < span;
      bad += written[i] != (in_t || in_s) || ((in_t || in_s) && grad_h[i] != grad_byte(i));
    }
  }
  // A team past the last item (end 0) loads no block.
  const cu::TeamPass idle{0, 0, team, 0, static_cast<int>(pass)};
  bad += cu::h_block_present(layout, idle, cu::h_block_elements(kH), 0) || cu::mask_block_present(layout, idle, 0);
}

template <int kX>
void walk_all_h_sizes(const nf_kernels::FlatLayout& layout, bool with_s, const std::vector<uint8_t>& mask,
                      PassWalk& walk) {
  walk_vector_passes<kX, 2>(layout, with_s, mask, walk);
  walk_vector_passes<kX, 4>(layout, with_s, mask, walk);
  walk_vector_passes<kX, 8>(layout, with_s, mask, walk);
}

// Channel pairs on the CUDA vector path (vector_sizes): with pair_inner a whole number of units, each unit-aligned run of
// a unit's positions is one run of h (base(p0 + k) = base(p0) + k), which is what lets one pair_shift serve a group
// or a block; other pair_inner values, and a compact h, are left to the element path. And base(p) itself against
// p + (p / pair_inner) * pair_inner, every position of h taken once by the t and s_raw of [0, half).
void test_channel_pairs() {
  int bad = 0;
  for (int64_t inner : {1, 2, 3, 4, 8, 12, 16, 40, 64}) {
    for (int64_t channels : {1, 2, 5}) {
      const int64_t half = inner * channels;
      nf_kernels::FlatLayout layout{2, half, 0, half, 2 * half, 0, nf_kernels::kPatternRange, 0, 0, 0, nullptr};
      layout.s_offset = inner;
      layout.pair_inner = inner;
      layout.pair_div = nf_kernels::make_fast_div(static_cast<uint64_t>(inner));
      std::vector<int> taken(2 * half, 0);
      for (int64_t p = 0; p < half; ++p) {
        const int64_t base = nf_kernels::h_base(layout, p);
        bad += base != p + (p / inner) * inner;
        ++taken[base + layout.t_offset];
        ++taken[base + layout.s_offset];
      }
      for (int count : taken) bad += count != 1;
      for (int x_size : {2, 4, 8})
        for (int h_size : {2, 4, 8}) {
          const int64_t unit = nf_kernels::cuda::h_in_blocks(x_size, h_size) ? nf_kernels::cuda::h_block_elements(h_size)
                                                                              : nf_kernels::cuda::group_elements(x_size);
          const bool vector = nf_kernels::cuda::vector_sizes(layout, x_size, h_size);
          if (vector != (half % unit == 0 && inner % unit == 0)) ++bad;
          if (!vector) continue;
          for (int64_t p0 = 0; p0 < half; p0 += unit)
            for (int64_t k = 0; k < unit; ++k) bad += nf_kernels::h_base(layout, p0 + k) != nf_kernels::h_base(layout, p0) + k;
        }
      layout.pattern = nf_kernels::kPatternGather;
      bad += nf_kernels::cuda::vector_sizes(layout, 4, 4);  // a compact h: never the vector path
    }
  }
  check(bad == 0, "channel pairs: base(p), h covered once, and the vector path only where a unit is one run (" +
                      std::to_string(bad) + " mismatches)");
}

void test_vector_passes() {
  PassWalk walk;
  std::mt19937 rng(4);
  auto walk_layout = [&](const nf_kernels::FlatLayout& layout, bool with_s) {
    std::vector<uint8_t> mask(layout.numel);
    for (auto& b : mask) b = rng() % 3 == 0 ? 0 : static_cast<uint8_t>(1 + rng() % 255);
    walk_all_h_sizes<2>(layout, with_s, mask, walk);
    walk_all_h_sizes<4>(layout, with_s, mask, walk);
    walk_all_h_sizes<8>(layout, with_s, mask, walk);
  };
  // "half" splits of [C, inner] samples (affine: s then t, each hi - lo; additive: t alone), and every
  // pattern over the whole sample (checkerboard and mask: h of 2 numel, or numel for an additive coupling), for
  // sizes from one group to teams of every width and chunks of several passes.
  const int64_t inners[] = {2, 4, 8, 12, 16, 20, 24, 64, 200, 1024};  // whole groups, whole h blocks, or not
  for (int64_t channels : {2, 3, 4, 6})
    for (int64_t inner : inners) {
      const int64_t numel = channels * inner;
      for (bool flip : {false, true}) {
        const int64_t kept = channels / 2, lo = (flip ? 0 : kept) * inner, hi = (flip ? channels - kept : channels) * inner;
        const int64_t span = hi - lo;
        walk_layout({1, numel, lo, hi, 2 * span, span, nf_kernels::kPatternRange, 0, 0, 0, nullptr}, true);
        walk_layout({1, numel, lo, hi, span, 0, nf_kernels::kPatternRange, 0, 0, 0, nullptr}, false);
      }
    }
  // 260, 520, 1032: a group more than a whole pass of a warp (of fp32, fp64 and 16-bit x); 2^21 + 64: rounds of
  // several passes a chunk.
  for (int64_t numel : {4, 8, 12, 16, 20, 32, 48, 64, 96, 128, 260, 520, 1000, 1032, 4096, 6144, 49152, 131088,
                        2 * 1024 * 1024 + 64})
    for (int pattern : {nf_kernels::kPatternCheckerboard, nf_kernels::kPatternMask}) {
      walk_layout({1, numel, 0, numel, 2 * numel, numel, pattern, 0, 1, 1, nullptr}, true);
      walk_layout({1, numel, 0, numel, numel, 0, pattern, 0, 1, 1, nullptr}, false);
    }
  std::printf("vector passes: %d layouts walked\n", walk.walked);
  check(walk.walked > 300, "the vector-path walk covers the layouts it should (" + std::to_string(walk.walked) + ")");
  check(walk.bad == 0, "the CUDA vector path's passes, blocks and exchanges move exactly each lane's data (" +
                           std::to_string(walk.bad) + " mismatches)");
}
}  // namespace

int main() {
  test_vector_math();
  test_half_conversions();
  test_ops();
  test_instruction_sets_agree();
  test_logdet_summation();
  test_fast_div();
  test_checkerboard_index();
  test_nonzero_bytes();
  test_vector_passes();
  test_channel_pairs();
  std::printf(failures ? "%d check(s) failed\n" : "all checks passed\n", failures);
  return failures ? 1 : 0;
}
