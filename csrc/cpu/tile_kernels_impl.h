// The CPU tile kernels (see tile_kernels.h). This file is compiled once per instruction set: each
// tile_kernels_<isa>.cpp includes the system headers, switches the compiler's target, defines NF_ISA_NAME and
// includes this file, which therefore has no include guard and must not include system headers itself.
//
// A tile is processed in chunks of kChunk elements staged in small arrays that stay in L1: convert the inputs
// to the compute type, run the shared math (coupling_math.h) over the chunk in one branch-free loop that the
// compiler vectorizes, apply the mask pattern with selects, and convert back while storing. Memory is read and
// written once; everything else happens in L1 and registers.

#include "../coupling_math.h"
#include "half_bits.h"
#include "pairwise_sum.h"
#include "tile_kernels.h"

namespace nf_kernels {
namespace cpu {
namespace NF_ISA_NAME {
namespace {

constexpr int64_t kChunk = 256;
constexpr int64_t kChunksPerTile = (kTileElements + kChunk - 1) / kChunk;

template <class CT>
void load(const void* base, DType dtype, int64_t offset, int64_t len, CT* dst) {
  switch (dtype) {
    case DType::kFloat32: {
      const float* src = static_cast<const float*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<CT>(src[k]);
      break;
    }
    case DType::kFloat64: {
      const double* src = static_cast<const double*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<CT>(src[k]);
      break;
    }
    case DType::kFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<CT>(float16_to_float(src[k]));
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<CT>(bfloat16_to_float(src[k]));
      break;
    }
  }
}

template <class CT>
void store(const CT* src, void* base, DType dtype, int64_t offset, int64_t len) {
  switch (dtype) {
    case DType::kFloat32: {
      float* dst = static_cast<float*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<float>(src[k]);
      break;
    }
    case DType::kFloat64: {
      double* dst = static_cast<double*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<double>(src[k]);
      break;
    }
    case DType::kFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = float_to_float16(static_cast<float>(src[k]));
      break;
    }
    case DType::kBFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = float_to_bfloat16(static_cast<float>(src[k]));
      break;
    }
  }
}

inline int64_t element_size(DType dtype) {
  return dtype == DType::kFloat64 ? 8 : dtype == DType::kFloat32 ? 4 : 2;
}

// dst[offset, offset + len) = src[offset, ...), converting between dtypes when they differ (kept elements, and
// grad_y -> grad_x where the mask leaves an element alone).
template <class CT>
void copy_elements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t offset, int64_t len) {
  if (len <= 0) return;
  if (src_dtype == dst_dtype) {
    const int64_t size = element_size(src_dtype);
    std::memcpy(static_cast<char*>(dst) + offset * size, static_cast<const char*>(src) + offset * size,
                static_cast<size_t>(len * size));
    return;
  }
  alignas(64) CT staged[kChunk];
  for (int64_t n0 = offset; n0 < offset + len; n0 += kChunk) {
    const int64_t count = std::min(kChunk, offset + len - n0);
    load(src, src_dtype, n0, count, staged);
    store(staged, dst, dst_dtype, n0, count);
  }
}

// dst[k] = src[offset + at[k]] (the parameters of a compact h or of channel pairs, whose positions are not one run).
template <class CT>
void gather(const void* base, DType dtype, int64_t offset, const int64_t* at, int64_t len, CT* dst) {
  switch (dtype) {
    case DType::kFloat32: {
      const float* src = static_cast<const float*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<CT>(src[at[k]]);
      break;
    }
    case DType::kFloat64: {
      const double* src = static_cast<const double*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<CT>(src[at[k]]);
      break;
    }
    case DType::kFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<CT>(float16_to_float(src[at[k]]));
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[k] = static_cast<CT>(bfloat16_to_float(src[at[k]]));
      break;
    }
  }
}

// dst[offset + at[k]] = src[k], for every k (`owned` null) or where owned[k] is nonzero.
template <class CT>
void scatter(const CT* src, void* base, DType dtype, int64_t offset, const int64_t* at, const uint8_t* owned,
             int64_t len) {
  switch (dtype) {
    case DType::kFloat32: {
      float* dst = static_cast<float*>(base) + offset;
      for (int64_t k = 0; k < len; ++k)
        if (!owned || owned[k]) dst[at[k]] = static_cast<float>(src[k]);
      break;
    }
    case DType::kFloat64: {
      double* dst = static_cast<double*>(base) + offset;
      for (int64_t k = 0; k < len; ++k)
        if (!owned || owned[k]) dst[at[k]] = static_cast<double>(src[k]);
      break;
    }
    case DType::kFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k)
        if (!owned || owned[k]) dst[at[k]] = float_to_float16(static_cast<float>(src[k]));
      break;
    }
    case DType::kBFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k)
        if (!owned || owned[k]) dst[at[k]] = float_to_bfloat16(static_cast<float>(src[k]));
      break;
    }
  }
}

// (t, s_raw) pairs of single elements (normflows' and zuko's interleaved parameters of vectors): t[k] = src[offset +
// 2k], s[k] = src[offset + 2k + 1], in one loop the compiler vectorizes (two loads and a shuffle), and its inverse.
template <class CT>
void load_pairs(const void* base, DType dtype, int64_t offset, int64_t len, CT* __restrict__ t, CT* __restrict__ s) {
  switch (dtype) {
    case DType::kFloat32: {
      const float* __restrict__ src = static_cast<const float*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) t[k] = static_cast<CT>(src[2 * k]), s[k] = static_cast<CT>(src[2 * k + 1]);
      break;
    }
    case DType::kFloat64: {
      const double* __restrict__ src = static_cast<const double*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) t[k] = static_cast<CT>(src[2 * k]), s[k] = static_cast<CT>(src[2 * k + 1]);
      break;
    }
    case DType::kFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k)
        t[k] = static_cast<CT>(float16_to_float(src[2 * k])), s[k] = static_cast<CT>(float16_to_float(src[2 * k + 1]));
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k)
        t[k] = static_cast<CT>(bfloat16_to_float(src[2 * k])), s[k] = static_cast<CT>(bfloat16_to_float(src[2 * k + 1]));
      break;
    }
  }
}

template <class CT>
void store_pairs(const CT* __restrict__ t, const CT* __restrict__ s, void* base, DType dtype, int64_t offset,
                 int64_t len) {
  switch (dtype) {
    case DType::kFloat32: {
      float* __restrict__ dst = static_cast<float*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[2 * k] = static_cast<float>(t[k]), dst[2 * k + 1] = static_cast<float>(s[k]);
      break;
    }
    case DType::kFloat64: {
      double* __restrict__ dst = static_cast<double*>(base) + offset;
      for (int64_t k = 0; k < len; ++k) dst[2 * k] = static_cast<double>(t[k]), dst[2 * k + 1] = static_cast<double>(s[k]);
      break;
    }
    case DType::kFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k)
        dst[2 * k] = float_to_float16(static_cast<float>(t[k])), dst[2 * k + 1] = float_to_float16(static_cast<float>(s[k]));
      break;
    }
    case DType::kBFloat16: {
      uint16_t* dst = static_cast<uint16_t*>(base) + offset;
      for (int64_t k = 0; k < len; ++k)
        dst[2 * k] = float_to_bfloat16(static_cast<float>(t[k])), dst[2 * k + 1] = float_to_bfloat16(static_cast<float>(s[k]));
      break;
    }
  }
}

// How a chunk finds its s_raw and t in h: one run each (every layout but the two below), (t, s_raw) pairs of single
// elements over [lo, hi) (base(p) = 2p), or each element's own position (channel pairs of longer channels, and a
// compact h: param_positions).
enum class ParamAccess { kRuns, kElementPairs, kPositions };

inline ParamAccess param_access(const FlatLayout& layout) {
  if (params_in_runs(layout)) return ParamAccess::kRuns;
  if (layout.pair_inner == 1 && layout.pattern != kPatternGather) return ParamAccess::kElementPairs;
  return ParamAccess::kPositions;
}

// base(p) of elements n0 .. n0 + len - 1 (coupling_layout.h), relative to the sample's h, for the layouts whose
// parameters are not runs. Channel pairs walk the channels (one division a chunk); a compact h reads its table, and
// gives kept elements position 0, which exists: their values are selected away and their gradients not written.
inline void param_positions(const FlatLayout& layout, int64_t n0, int64_t len, int64_t* at) {
  if (layout.pattern == kPatternGather) {
    const int32_t* table = layout.h_index + n0;
    if (layout.pair_inner == 1) {
      for (int64_t k = 0; k < len; ++k) at[k] = table[k] < 0 ? 0 : 2 * int64_t(table[k]);
    } else {
      for (int64_t k = 0; k < len; ++k) at[k] = table[k] < 0 ? 0 : h_base(layout, table[k]);
    }
    return;
  }
  const int64_t inner = layout.pair_inner, p0 = n0 - layout.lo;
  int64_t channel = p0 / inner, i = p0 - channel * inner;
  for (int64_t k = 0; k < len; ++k) {
    at[k] = channel * inner + i + channel * inner;  // base(p) = p + channel * inner, p = channel * inner + i
    if (++i == inner) i = 0, ++channel;
  }
}

// 1 where element n0 + k of a sample is transformed, for k < len; `buffer` holds the answer when it has to be
// computed (checkerboard, a compact h's table), the mask itself is returned otherwise. Not called for kPatternRange.
inline const uint8_t* selection(const FlatLayout& layout, int64_t n0, int64_t len, uint8_t* buffer) {
  if (layout.pattern == kPatternMask) return layout.transformed + n0;
  if (layout.pattern == kPatternGather) {
    for (int64_t k = 0; k < len; ++k) buffer[k] = static_cast<uint8_t>(layout.h_index[n0 + k] >= 0);
    return buffer;
  }
  // Checkerboard: walk the rows covered by the chunk; along a row the pattern alternates.
  const int64_t height = layout.plane / layout.width;
  const int64_t r = n0 % layout.plane;
  int64_t i = r / layout.width;
  int64_t j = r % layout.width;
  for (int64_t k = 0; k < len;) {
    const int64_t run = std::min(len - k, layout.width - j);
    // (i + j + m) % 2 == parity  <=>  (i + j + parity + m) is even
    const int64_t start_parity = (i + j + layout.parity) & 1;
    for (int64_t m = 0; m < run; ++m) buffer[k + m] = static_cast<uint8_t>(((start_parity + m) & 1) ^ 1);
    k += run;
    j = 0;
    if (++i == height) i = 0;
  }
  return buffer;
}

template <class CT>
constexpr DType native_dtype() {
  return sizeof(CT) == sizeof(double) ? DType::kFloat64 : DType::kFloat32;
}

// Input elements [offset, offset + len) as compute-type values: the tensor's memory itself when it already
// holds the compute type (float32 and float64 need no staging copy), else converted into `buffer`.
template <class CT>
const CT* input(const void* base, DType dtype, int64_t offset, int64_t len, CT* buffer) {
  if (dtype == native_dtype<CT>()) return static_cast<const CT*>(base) + offset;
  load(base, dtype, offset, len, buffer);
  return buffer;
}

// Where to compute output elements: straight into the tensor when it holds the compute type, else into
// `buffer`, which commit() then converts into the tensor.
template <class CT>
CT* output(void* base, DType dtype, int64_t offset, CT* buffer) {
  return dtype == native_dtype<CT>() ? static_cast<CT*>(base) + offset : buffer;
}

template <class CT>
void commit(const CT* computed, void* base, DType dtype, int64_t offset, int64_t len) {
  if (dtype != native_dtype<CT>()) store(computed, base, dtype, offset, len);
}

// The chunk's t and s_raw copied into `t` and `s` for the layouts whose parameters are not runs (param_access); for
// kPositions their positions stay in `at`, where the backward scatters grad_h.
template <int kScale, class CT>
void stage_params(const FlatLayout& layout, ParamAccess access, const void* h, DType h_dtype, int64_t sample_h,
                  int64_t n0, int64_t len, int64_t* at, CT* t, CT* s) {
  if (access == ParamAccess::kElementPairs) {  // never additive: pairs hold an s_raw
    load_pairs(h, h_dtype, sample_h + 2 * (n0 - layout.lo), len, t, s);
    return;
  }
  param_positions(layout, n0, len, at);
  gather(h, h_dtype, sample_h + layout.t_offset, at, len, t);
  if constexpr (kScale != kAdditive) gather(h, h_dtype, sample_h + layout.s_offset, at, len, s);
}

// A run of h's parameters from `at` on as compute-type values (input()), plus h_bias's run from `bias_at` on when
// there is a bias, summed into `staged`: one rounding in the compute type, as a product's output plus its bias.
template <class CT>
const CT* param_run(const void* h, const void* h_bias, DType h_dtype, int64_t at, int64_t bias_at, int64_t len,
                    CT* staged, CT* bias_buffer) {
  const CT* params = input(h, h_dtype, at, len, staged);
  if (h_bias == nullptr) return params;
  const CT* __restrict__ bias = input(h_bias, h_dtype, bias_at, len, bias_buffer);
  for (int64_t k = 0; k < len; ++k) staged[k] = params[k] + bias[k];
  return staged;
}

template <class CT>
struct alignas(64) ForwardStage {
  CT x[kChunk], s[kChunk], t[kChunk], y[kChunk], a[kChunk], bias[kChunk];
  int64_t at[kChunk];  // param_positions, for the layouts that need them
  uint8_t selected[kChunk];
};

template <class CT>
struct alignas(64) BackwardStage {
  CT g[kChunk], x[kChunk], s[kChunk], t[kChunk], grad_x[kChunk], grad_s[kChunk], grad_t[kChunk], bias[kChunk];
  int64_t at[kChunk];
  uint8_t selected[kChunk];
};

// [first, last): the part of the tile [start, end) that may be transformed; the rest is passed through.
struct TransformableSpan {
  int64_t first, last;
  TransformableSpan(const FlatLayout& layout, int64_t start, int64_t end)
      : first(std::max(start, layout.lo)), last(std::min(end, layout.hi)) {
    if (first > last) first = last = end;
  }
};

// The math of one chunk, in one loop the compiler vectorizes. Separate functions so the restrict qualifiers
// (inputs and outputs never overlap) reach the vectorizer, which otherwise gives up on the alias checks.
template <int kScale, bool kShiftFirst, bool kReverse, class CT>
void forward_elements(int64_t len, CT clamp, CT low, const CT* __restrict__ x, const CT* __restrict__ s,
                      const CT* __restrict__ t, CT* __restrict__ y, CT* __restrict__ a) {
  for (int64_t k = 0; k < len; ++k) {
    CT log_s = CT(0);
    if constexpr (kScale != kAdditive) log_s = log_scale<kScale>(s[k], clamp, low);
    a[k] = log_s;
    y[k] = coupling_step<kScale, kShiftFirst, kReverse>(x[k], log_s, t[k]);
  }
}

template <int kScale, bool kShiftFirst, bool kReverse, class CT>
void backward_elements(int64_t len, CT clamp, CT low, CT g_logdet, const CT* __restrict__ g, const CT* __restrict__ x,
                       const CT* __restrict__ s, const CT* __restrict__ t, CT* __restrict__ grad_x,
                       CT* __restrict__ grad_s, CT* __restrict__ grad_t) {
  for (int64_t k = 0; k < len; ++k) {
    CT log_s = CT(0);
    if constexpr (kScale != kAdditive) log_s = log_scale<kScale>(s[k], clamp, low);
    const StepGrad<CT> grad = coupling_step_grad<kScale, kShiftFirst, kReverse>(g[k], g_logdet, x[k], log_s, t[k]);
    grad_x[k] = grad.x;
    grad_t[k] = grad.t;
    if constexpr (kScale != kAdditive) grad_s[k] = grad.a * log_scale_grad<kScale>(s[k], clamp);
  }
}

template <class CT, int kScale, bool kShiftFirst, bool kReverse>
struct ForwardTile {
  static double run(const FlatLayout& layout, const CouplingConfig& config, const ForwardTensors& io, int64_t b,
                    int64_t start, int64_t end) {
    const int64_t x_base = b * layout.numel;
    const int64_t sample_h = b * layout.h_stride;
    const int64_t h_base = sample_h - layout.lo;  // h index of element n's base(p) for runs: h_base + n
    const ParamAccess access = param_access(layout);
    const TransformableSpan span(layout, start, end);
    copy_elements<CT>(io.x, io.x_dtype, io.y, io.x_dtype, x_base + start, span.first - start);
    copy_elements<CT>(io.x, io.x_dtype, io.y, io.x_dtype, x_base + span.last, end - span.last);
    const CT clamp = static_cast<CT>(config.clamp), low = static_cast<CT>(config.clamp_low);
    // The log-det (pairwise_sum.h): each chunk's terms are summed pairwise in the compute type, then the chunk
    // sums pairwise in double. The chunk sums of a run of same-sign terms are large, and rounding them in
    // float32 would cost more than all the rest when the terms cancel later. Chunks start at span.first, so
    // the order is fixed by the shapes.
    double chunk_sums[kChunksPerTile];
    int64_t chunks = 0;
    ForwardStage<CT> st;
    for (int64_t n0 = span.first; n0 < span.last; n0 += kChunk) {
      const int64_t len = std::min(kChunk, span.last - n0);
      const CT* x = input(io.x, io.x_dtype, x_base + n0, len, st.x);
      const CT* t = st.t;
      const CT* s = st.t;  // unused by additive couplings
      if (access == ParamAccess::kRuns) {
        const int64_t p0 = n0 - layout.lo;  // the run's first position: its parameters' place in h_bias
        t = param_run(io.h, io.h_bias, io.h_dtype, h_base + n0 + layout.t_offset, p0 + layout.t_offset, len, st.t,
                      st.bias);
        if constexpr (kScale != kAdditive)
          s = param_run(io.h, io.h_bias, io.h_dtype, h_base + n0 + layout.s_offset, p0 + layout.s_offset, len, st.s,
                        st.bias);
      } else {
        stage_params<kScale>(layout, access, io.h, io.h_dtype, sample_h, n0, len, st.at, st.t, st.s);
        s = st.s;
      }
      CT* y = output(io.y, io.x_dtype, x_base + n0, st.y);
      CT* a = st.a;
      forward_elements<kScale, kShiftFirst, kReverse>(len, clamp, low, x, s, t, y, a);
      if (layout.pattern != kPatternRange) {
        const uint8_t* selected = selection(layout, n0, len, st.selected);
        for (int64_t k = 0; k < len; ++k) {
          y[k] = selected[k] ? y[k] : x[k];
          a[k] = selected[k] ? a[k] : CT(0);
        }
      }
      commit(y, io.y, io.x_dtype, x_base + n0, len);
      if constexpr (kScale != kAdditive) chunk_sums[chunks++] = pairwise_sum(a, len);
    }
    const double total = pairwise_sum(chunk_sums, chunks);
    return kReverse ? -total : total;
  }
};

template <class CT, int kScale, bool kShiftFirst, bool kReverse>
struct BackwardTile {
  static int run(const FlatLayout& layout, const CouplingConfig& config, const BackwardTensors& io, int64_t b,
                 int64_t start, int64_t end) {
    const int64_t x_base = b * layout.numel;
    const int64_t sample_h = b * layout.h_stride;
    const int64_t h_base = sample_h - layout.lo;
    const ParamAccess access = param_access(layout);
    const TransformableSpan span(layout, start, end);
    // Outside [lo, hi) an element is passed through: its gradient is grad_y's, and it owns no part of grad_h.
    copy_elements<CT>(io.grad_y, io.grad_y_dtype, io.grad_x, io.x_dtype, x_base + start, span.first - start);
    copy_elements<CT>(io.grad_y, io.grad_y_dtype, io.grad_x, io.x_dtype, x_base + span.last, end - span.last);
    const CT clamp = static_cast<CT>(config.clamp), low = static_cast<CT>(config.clamp_low);
    const CT g_logdet = static_cast<const CT*>(io.grad_logdet)[b];
    BackwardStage<CT> st;
    for (int64_t n0 = span.first; n0 < span.last; n0 += kChunk) {
      const int64_t len = std::min(kChunk, span.last - n0);
      const int64_t s_at = h_base + n0 + layout.s_offset, t_at = h_base + n0 + layout.t_offset;
      const CT* g = input(io.grad_y, io.grad_y_dtype, x_base + n0, len, st.g);
      const CT* x = input(io.x, io.x_dtype, x_base + n0, len, st.x);
      const CT* t = st.t;
      const CT* s = st.t;  // unused by additive couplings
      CT* grad_s = st.grad_s;
      CT* grad_t = st.grad_t;
      if (access == ParamAccess::kRuns) {
        const int64_t p0 = n0 - layout.lo;
        t = param_run(io.h, io.h_bias, io.h_dtype, t_at, p0 + layout.t_offset, len, st.t, st.bias);
        grad_t = output(io.grad_h, io.h_dtype, t_at, st.grad_t);
        if constexpr (kScale != kAdditive) {
          s = param_run(io.h, io.h_bias, io.h_dtype, s_at, p0 + layout.s_offset, len, st.s, st.bias);
          grad_s = output(io.grad_h, io.h_dtype, s_at, st.grad_s);
        }
      } else {
        stage_params<kScale>(layout, access, io.h, io.h_dtype, sample_h, n0, len, st.at, st.t, st.s);
        s = st.s;
      }
      CT* grad_x = output(io.grad_x, io.x_dtype, x_base + n0, st.grad_x);
      backward_elements<kScale, kShiftFirst, kReverse>(len, clamp, low, g_logdet, g, x, s, t, grad_x, grad_s,
                                                       grad_t);
      const uint8_t* selected = nullptr;
      if (layout.pattern != kPatternRange) {
        // Kept elements: gradient passes through, and grad_h is zero there (whatever h holds, even NaN).
        selected = selection(layout, n0, len, st.selected);
        for (int64_t k = 0; k < len; ++k) {
          grad_x[k] = selected[k] ? grad_x[k] : g[k];
          grad_t[k] = selected[k] ? grad_t[k] : CT(0);
          if constexpr (kScale != kAdditive) grad_s[k] = selected[k] ? grad_s[k] : CT(0);
        }
      }
      commit(grad_x, io.grad_x, io.x_dtype, x_base + n0, len);
      if (access == ParamAccess::kRuns) {
        commit(grad_t, io.grad_h, io.h_dtype, t_at, len);
        if constexpr (kScale != kAdditive) commit(grad_s, io.grad_h, io.h_dtype, s_at, len);
      } else if (access == ParamAccess::kElementPairs) {
        store_pairs(grad_t, grad_s, io.grad_h, io.h_dtype, sample_h + 2 * (n0 - layout.lo), len);
      } else {
        // A compact h's kept elements own no position (the transformed ones cover h); channel pairs own one each.
        const uint8_t* owned = layout.pattern == kPatternGather ? selected : nullptr;
        scatter(grad_t, io.grad_h, io.h_dtype, sample_h + layout.t_offset, st.at, owned, len);
        if constexpr (kScale != kAdditive)
          scatter(grad_s, io.grad_h, io.h_dtype, sample_h + layout.s_offset, st.at, owned, len);
      }
    }
    return 0;
  }
};

// Runtime (scale, shift_first, reverse) -> the Tile instantiation compiled for exactly that case.
template <template <class, int, bool, bool> class Tile, class CT, int kScale, class... Args>
auto with_flags(const CouplingConfig& config, Args&&... args) {
  if (config.reverse)
    return config.shift_first ? Tile<CT, kScale, true, true>::run(args...) : Tile<CT, kScale, false, true>::run(args...);
  return config.shift_first ? Tile<CT, kScale, true, false>::run(args...) : Tile<CT, kScale, false, false>::run(args...);
}

template <template <class, int, bool, bool> class Tile, class CT, class... Args>
auto with_config(const CouplingConfig& config, Args&&... args) {
  switch (config.scale) {
    case kExp: return with_flags<Tile, CT, kExp>(config, args...);
    case kTanh: return with_flags<Tile, CT, kTanh>(config, args...);
    case kAtan: return with_flags<Tile, CT, kAtan>(config, args...);
    case kSigmoid: return with_flags<Tile, CT, kSigmoid>(config, args...);
    case kRSigmoid: return with_flags<Tile, CT, kRSigmoid>(config, args...);
    case kNflowsSigmoid: return with_flags<Tile, CT, kNflowsSigmoid>(config, args...);
    case kSoftclamp: return with_flags<Tile, CT, kSoftclamp>(config, args...);
    case kClip: return with_flags<Tile, CT, kClip>(config, args...);
    case kFreiaAtan: return with_flags<Tile, CT, kFreiaAtan>(config, args...);
    case kFreiaTanh: return with_flags<Tile, CT, kFreiaTanh>(config, args...);
    case kFreiaSigmoid: return with_flags<Tile, CT, kFreiaSigmoid>(config, args...);
    default: return with_flags<Tile, CT, kAdditive>(config, args...);
  }
}

double forward_tile(const FlatLayout& layout, const CouplingConfig& config, const ForwardTensors& io, int64_t b,
                    int64_t start, int64_t end) {
  if (io.x_dtype == DType::kFloat64)
    return with_config<ForwardTile, double>(config, layout, config, io, b, start, end);
  return with_config<ForwardTile, float>(config, layout, config, io, b, start, end);
}

void backward_tile(const FlatLayout& layout, const CouplingConfig& config, const BackwardTensors& io, int64_t b,
                   int64_t start, int64_t end) {
  if (io.x_dtype == DType::kFloat64)
    with_config<BackwardTile, double>(config, layout, config, io, b, start, end);
  else
    with_config<BackwardTile, float>(config, layout, config, io, b, start, end);
}

}  // namespace

const TileKernels kTileKernels = {NF_ISA_STRING, &forward_tile, &backward_tile};

}  // namespace NF_ISA_NAME
}  // namespace cpu
}  // namespace nf_kernels
