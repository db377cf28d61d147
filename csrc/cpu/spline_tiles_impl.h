// The CPU spline tile kernels (see spline_tiles.h). Compiled once per instruction set like the affine tiles: each
// spline_tiles_<isa>.cpp includes the system headers, switches the compiler's target, defines NF_ISA_NAME and
// includes this file, which therefore has no include guard and must not include system headers itself.
//
// A tile is processed in chunks of kLanes elements. A chunk's inputs are staged in L1 in the compute type, the
// parameters as P rows of kLanes (parameter j of the chunk's elements side by side, whatever the layout's R:
// converted from the storage dtype on the way in), and csrc/spline_math.h's passes run one at a time over the
// chunk, with the loop over the elements innermost, so that the compiler vectorizes each of them: the softmax of
// the widths' and heights' rows, the bin search's start and steps, the evaluation (and in the backward the local
// gradients and the parameters' gradients, a row each). Each pass's per-element state stays in the stage, one
// array a field; the loops over a row take it through a pointer of its own (indexing the rows directly, GCC
// vectorized some across the rows instead, with scatters). Memory is read once (x and params) and written once
// (y, or grad_x and grad_params). A chunk runs over its elements rounded up to a vector, so that short samples
// ([B, 2] vectors) cost a vector a pass, not kLanes elements; and samples of a short span go several to a chunk
// (forward_samples, backward_samples: a [B, 8] vector flow fills its vectors instead of a quarter of each).
//
// The log-det: each chunk's terms are summed pairwise in the compute type, the chunk sums pairwise in double, the
// chunks starting where the tile's transformable span does: the order depends on the shapes alone.

#include "../spline_math.h"
#include "half_bits.h"
#include "pairwise_sum.h"
#include "spline_tiles.h"

namespace nf_kernels {
namespace cpu {
namespace NF_ISA_NAME {
namespace {

constexpr int kLanes = kSplineChunkLanes;  // a chunk's elements at most (and the stride of the parameter rows)
constexpr int kLaneMultiple = 16;  // a chunk runs over its elements rounded up to this (a vector of floats)
constexpr int64_t kChunksPerTile = (kTileElements + kLanes - 1) / kLanes;

// The storage types, by their raw words for the 16-bit ones.
struct Float16 {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

template <class CT, class S>
CT decode(S v) {
  if constexpr (std::is_same_v<S, Float16>) return static_cast<CT>(float16_to_float(v.bits));
  else if constexpr (std::is_same_v<S, BFloat16>) return static_cast<CT>(bfloat16_to_float(v.bits));
  else return static_cast<CT>(v);
}

template <class S, class CT>
S encode(CT v) {
  if constexpr (std::is_same_v<S, Float16>) return {float_to_float16(static_cast<float>(v))};
  else if constexpr (std::is_same_v<S, BFloat16>) return {float_to_bfloat16(static_cast<float>(v))};
  else return static_cast<S>(v);
}

// The per-element state of the passes, one array of kLanes a field (what the vectorized loops want).
template <class CT>
struct SearchLanes {
  int k[kLanes];
  CT x0[kLanes], x1[kLanes], y0[kLanes], y1[kLanes], width_mass[kLanes], height_mass[kLanes];
  CT width_share[kLanes], height_share[kLanes], raw_d0[kLanes], raw_d1[kLanes];
  CT cum_w[kLanes], cum_h[kLanes], mass_w[kLanes], mass_h[kLanes], knot_x[kLanes], knot_y[kLanes];

  spline::Bin<CT> bin(int e) const {
    return {k[e], x0[e], x1[e], y0[e], y1[e], width_mass[e], height_mass[e], width_share[e], height_share[e],
            raw_d0[e], raw_d1[e]};
  }
  spline::BinSearch<CT> search(int e) const {
    return {bin(e), cum_w[e], cum_h[e], mass_w[e], mass_h[e], knot_x[e], knot_y[e]};
  }
  void set(int e, const spline::BinSearch<CT>& s) {
    const spline::Bin<CT>& b = s.bin;
    k[e] = b.k, x0[e] = b.x0, x1[e] = b.x1, y0[e] = b.y0, y1[e] = b.y1;
    width_mass[e] = b.width_mass, height_mass[e] = b.height_mass;
    width_share[e] = b.width_share, height_share[e] = b.height_share;
    raw_d0[e] = b.raw_d0, raw_d1[e] = b.raw_d1;
    cum_w[e] = s.cum_w, cum_h[e] = s.cum_h, mass_w[e] = s.mass_w, mass_h[e] = s.mass_h;
    knot_x[e] = s.knot_x, knot_y[e] = s.knot_y;
  }
};

template <class CT>
struct GradLanes {
  int k[kLanes];
  CT on[kLanes];  // 1 or 0: a bool array would not vectorize against the comparisons' masks
  CT gx_left[kLanes], gx_right[kLanes], gy_left[kLanes], gy_right[kLanes], offset_w[kLanes], offset_h[kLanes];
  CT g_raw_d0[kLanes], g_raw_d1[kLanes];

  spline::BinGrad<CT> grad(int e) const {
    return {k[e], on[e] != CT(0), gx_left[e], gx_right[e], gy_left[e], gy_right[e], offset_w[e], offset_h[e],
            g_raw_d0[e], g_raw_d1[e], CT(0)};
  }
  void set(int e, const spline::BinGrad<CT>& g) {
    k[e] = g.k, on[e] = g.on ? CT(1) : CT(0), gx_left[e] = g.gx_left, gx_right[e] = g.gx_right, gy_left[e] = g.gy_left;
    gy_right[e] = g.gy_right, offset_w[e] = g.offset_w, offset_h[e] = g.offset_h;
    g_raw_d0[e] = g.g_raw_d0, g_raw_d1[e] = g.g_raw_d1;
  }
};

// A chunk's inputs and the passes' state; the parameter rows (and the backward's gradient rows) follow it in the
// same allocation, P rows of kLanes each.
template <class CT>
struct alignas(64) Stage {
  CT v[kLanes];       // the op's input
  CT g[kLanes];       // the backward's grad_y
  CT out[kLanes];     // y or grad_x
  CT terms[kLanes];   // log-det terms
  CT scratch[kLanes];
  CT selected[kLanes];  // 1 or 0, as GradLanes::on
  CT g_logdet[kLanes];  // the backward's log-det gradient of each element's sample
  int lanes;               // the elements the passes run over: the chunk's, rounded up to kLaneMultiple
  int64_t offset[kLanes];  // where each element's parameters start in the params the chunk reads from
  SearchLanes<CT> search;
  GradLanes<CT> grad;
};

// Elements [n0, n0 + len) of one sample into lanes [e0, e0 + len) of the stage: inputs (the sample's `x`), selection,
// and where their parameters start, `params_offset` being where the sample's start.
template <class CT, class XS>
void stage_elements(const SplineLayout& layout, const XS* x, int64_t params_offset, int64_t n0, int len,
                    Stage<CT>& st, int e0) {
  const FlatLayout& sel = layout.select;
  const int64_t inner = layout.inner, per_channel = spline_params_per_element(layout.bins) * inner;
  int64_t channel = (n0 - sel.lo) / inner, position = (n0 - sel.lo) % inner;
  int64_t* __restrict__ offset = st.offset + e0;
  CT* __restrict__ v = st.v + e0;
  CT* __restrict__ selected = st.selected + e0;
  for (int e = 0; e < len; ++e) {  // the channel and position in it walk along: no division per element
    offset[e] = params_offset + channel * per_channel + position;
    if (++position == inner) position = 0, ++channel;
  }
  for (int e = 0; e < len; ++e) v[e] = decode<CT>(x[n0 + e]);
  if (sel.pattern == kPatternRange) {
    for (int e = 0; e < len; ++e) selected[e] = CT(1);
  } else if (sel.pattern == kPatternCheckerboard) {  // row i and column j walk along the plane
    const int64_t height = sel.plane / sel.width, r = n0 % sel.plane;
    int64_t i = r / sel.width, j = r % sel.width;
    for (int e = 0; e < len; ++e) {
      selected[e] = ((i + j) & 1) == sel.parity ? CT(1) : CT(0);
      if (++j == sel.width) j = 0, i = i + 1 == height ? 0 : i + 1;
    }
  } else {
    for (int e = 0; e < len; ++e) selected[e] = sel.transformed[n0 + e] != 0 ? CT(1) : CT(0);
  }
}

// The chunk's `len` staged elements rounded up to a vector, and their parameters read from `params` into rows
// (parameter j of element e at rows[j * kLanes + e]), converted to the compute type.
template <class CT, class PS>
void stage_params(const SplineLayout& layout, const PS* params, int len, Stage<CT>& st, CT* __restrict__ rows) {
  // Lanes past len compute on copies of lane 0 (so the vectorized passes need no tail), their results unused.
  st.lanes = std::min(kLanes, (len + kLaneMultiple - 1) / kLaneMultiple * kLaneMultiple);
  for (int e = len; e < st.lanes; ++e) st.v[e] = st.v[0], st.selected[e] = CT(0), st.offset[e] = st.offset[0];
  const int64_t inner = layout.inner;
  const int per = spline_params_per_element(layout.bins), lanes = st.lanes;
  const bool contiguous = st.offset[lanes - 1] - st.offset[0] == lanes - 1;  // one channel, R >= the chunk
  if (contiguous) {
    for (int j = 0; j < per; ++j) {
      CT* __restrict__ row = rows + j * kLanes;
      const PS* src = params + st.offset[0] + j * inner;
      for (int e = 0; e < lanes; ++e) row[e] = decode<CT>(src[e]);
    }
    return;
  }
  // Elements in different channels (vectors, R = 1: each element's P parameters side by side): read element by
  // element, so that memory is read in order (the prefetcher streams it) and the scattered writes land in L1.
  // Row by row, each row's strided reads missed the cache for every element.
  for (int e = 0; e < lanes; ++e) {
    const PS* src = params + st.offset[e];
    for (int j = 0; j < per; ++j) rows[j * kLanes + e] = decode<CT>(src[j * inner]);
  }
}

// Where a chunk's parameters' gradients go: `grad_params` at the staged offsets, the first `len` elements.
template <class CT, class PS>
void write_parameter_grads(const SplineLayout& layout, const Stage<CT>& st, int len, const CT* grad_rows,
                           PS* grad_params) {
  const int per = spline_params_per_element(layout.bins);
  const bool contiguous = st.offset[len - 1] - st.offset[0] == len - 1;
  if (contiguous) {
    for (int j = 0; j < per; ++j) {
      const CT* row = grad_rows + j * kLanes;
      PS* dst = grad_params + st.offset[0] + j * layout.inner;
      for (int e = 0; e < len; ++e) dst[e] = encode<PS>(row[e]);
    }
  } else {  // element by element, memory written in order (as stage_params reads it)
    for (int e = 0; e < len; ++e) {
      PS* dst = grad_params + st.offset[e];
      for (int j = 0; j < per; ++j) dst[j * layout.inner] = encode<PS>(grad_rows[j * kLanes + e]);
    }
  }
}

// The softmax of `bins` rows in place: each lane's maximum, then exp(u - max) and the sum in one pass, then the
// shares. Two passes where csrc/spline_math.h's per-element form has an online one: here the exponentials are
// kept (the rows are in L1), so each is computed once for the normalizer, the bin search and the backward.
template <class CT>
void softmax_rows(CT* __restrict__ rows, int bins, int lanes, CT* __restrict__ scratch, CT* __restrict__ sum) {
  CT* __restrict__ max = scratch;
#pragma GCC ivdep
  for (int e = 0; e < lanes; ++e) max[e] = rows[e], sum[e] = CT(0);
  for (int j = 1; j < bins; ++j) {
    const CT* __restrict__ row = rows + j * kLanes;
#pragma GCC ivdep
    for (int e = 0; e < lanes; ++e) max[e] = row[e] > max[e] ? row[e] : max[e];
  }
  for (int j = 0; j < bins; ++j) {
    CT* __restrict__ row = rows + j * kLanes;
#pragma GCC ivdep
    for (int e = 0; e < lanes; ++e) {
      const CT v = math::exp(row[e] - max[e]);
      row[e] = v;
      sum[e] += v;
    }
  }
#pragma GCC ivdep
  for (int e = 0; e < lanes; ++e) sum[e] = CT(1) / sum[e];
  for (int j = 0; j < bins; ++j) {
    CT* __restrict__ row = rows + j * kLanes;
#pragma GCC ivdep
    for (int e = 0; e < lanes; ++e) row[e] *= sum[e];
  }
}

// The passes that find every element's bin: the widths' and heights' rows become their softmax shares (in place),
// then the knots and the search. Every loop over the lanes is independent between lanes (ivdep: the state arrays
// and the rows never overlap).
template <bool kReverse, class CT>
void find_bins(const spline::Constants<CT> c, Stage<CT>& st, CT* __restrict__ rows) {
  const int bins = c.bins;
  const int lanes = st.lanes;
  softmax_rows(rows, bins, lanes, st.scratch, st.terms);
  softmax_rows(rows + bins * kLanes, bins, lanes, st.scratch, st.terms);
  const CT* __restrict__ widths = rows;
  const CT* __restrict__ heights = rows + bins * kLanes;
  const CT* __restrict__ derivatives = rows + 2 * bins * kLanes;
#pragma GCC ivdep
  for (int e = 0; e < lanes; ++e) st.search.set(e, spline::bin_search_start(c, widths[e], heights[e]));
  for (int j = 1; j < bins; ++j) {
#pragma GCC ivdep
    for (int e = 0; e < lanes; ++e) {
      spline::BinSearch<CT> s = st.search.search(e);
      spline::bin_search_step<kReverse>(s, c, j, derivatives[(j - 1) * kLanes + e], widths[j * kLanes + e],
                                        heights[j * kLanes + e], st.v[e]);
      st.search.set(e, s);
    }
  }
}

// [first, last): the part of [start, end) that may be transformed (empty at `end` when none).
struct Span {
  int64_t first, last;
  Span(const SplineLayout& layout, int64_t start, int64_t end)
      : first(std::max(start, layout.select.lo)), last(std::min(end, layout.select.hi)) {
    if (first > last) first = last = end;
  }
};

template <class S>
void copy_range(const S* src, S* dst, int64_t from, int64_t to) {
  if (to > from) std::memcpy(dst + from, src + from, static_cast<size_t>(to - from) * sizeof(S));
}

// The stage and the parameter rows (twice for the backward: parameters and their gradients), in a buffer each
// thread keeps (a tile may be a short sample: no allocation per tile).
template <class CT>
struct Workspace {
  Stage<CT>* stage;
  CT* rows;
  CT* grad_rows;

  Workspace(int bins, bool with_grads) {
    thread_local std::vector<unsigned char> memory;
    const size_t row_bytes = static_cast<size_t>(spline_params_per_element(bins)) * kLanes * sizeof(CT);
    const size_t bytes = sizeof(Stage<CT>) + (with_grads ? 2 : 1) * row_bytes + 64;
    if (memory.size() < bytes) memory.resize(bytes);
    unsigned char* base = memory.data();
    base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
    stage = new (base) Stage<CT>;
    rows = reinterpret_cast<CT*>(base + sizeof(Stage<CT>));
    grad_rows = with_grads ? rows + spline_params_per_element(bins) * kLanes : nullptr;
  }
};

// A staged chunk's forward: every lane's output (st.out) and log-det term (st.terms).
template <bool kReverse, class CT>
void forward_chunk(const spline::Constants<CT>& c, Stage<CT>& st, CT* __restrict__ rows) {
  find_bins<kReverse>(c, st, rows);  // uses st.terms as scratch: the terms are written after it
  const int lanes = st.lanes;
#pragma GCC ivdep
  for (int e = 0; e < lanes; ++e) {
    const spline::Result<CT> r = spline::evaluate<kReverse>(st.search.bin(e), c, st.v[e], st.selected[e] != CT(0));
    st.out[e] = r.value;
    st.terms[e] = r.logdet;
  }
}

// A staged chunk's backward (st.g and st.g_logdet staged too): the input's gradient (st.out) and the parameters'
// gradients as rows (grad_rows, laid out as the parameter rows).
template <bool kReverse, class CT>
void backward_chunk(const spline::Constants<CT>& c, Stage<CT>& st, CT* __restrict__ rows,
                    CT* __restrict__ grad_rows) {
  const int bins = c.bins, lanes = st.lanes;
  const CT* shares = rows;  // the widths' and heights' rows, once find_bins has run
  find_bins<kReverse>(c, st, rows);
#pragma GCC ivdep
  for (int e = 0; e < lanes; ++e) {
    const spline::BinGrad<CT> g = spline::local_backward<kReverse>(st.search.bin(e), c, st.v[e], st.g[e],
                                                                   st.g_logdet[e], st.selected[e] != CT(0));
    st.grad.set(e, g);
    st.out[e] = g.grad_v;
  }
  // The parameters' gradients, a row at a time: widths and heights j, and the derivative at knot j (j > 0).
  // The terms array served as scratch in find_bins; the backward has no log-det terms.
#pragma omp simd
  for (int e = 0; e < lanes; ++e) {
    const spline::ParameterGrads<CT> g =
        spline::parameter_gradients_at(c, st.grad.grad(e), 0, shares[e], shares[bins * kLanes + e]);
    grad_rows[e] = g.width;
    grad_rows[bins * kLanes + e] = g.height;
  }
  for (int j = 1; j < bins; ++j) {
#pragma omp simd
    for (int e = 0; e < lanes; ++e) {
      const spline::ParameterGrads<CT> g = spline::parameter_gradients_at(
          c, st.grad.grad(e), j, shares[j * kLanes + e], shares[(bins + j) * kLanes + e]);
      grad_rows[j * kLanes + e] = g.width;
      grad_rows[(bins + j) * kLanes + e] = g.height;
      grad_rows[(2 * bins + j - 1) * kLanes + e] = g.derivative;
    }
  }
}

template <class CT, class XS, class PS, bool kReverse>
double forward_tile(const SplineLayout& layout, const spline::Constants<CT> c, const SplineForwardTensors& io,
                    int64_t b, int64_t start, int64_t end) {
  const int64_t numel = layout.select.numel;
  const XS* x = static_cast<const XS*>(io.x) + b * numel;
  XS* y = static_cast<XS*>(io.y) + b * numel;
  const PS* params = static_cast<const PS*>(io.params) + b * layout.params_stride;
  const Span span(layout, start, end);
  copy_range(x, y, start, span.first);
  copy_range(x, y, span.last, end);
  Workspace<CT> ws(layout.bins, false);
  Stage<CT>& st = *ws.stage;
  double chunk_sums[kChunksPerTile];
  int64_t chunks = 0;
  for (int64_t n0 = span.first; n0 < span.last; n0 += kLanes) {
    const int len = static_cast<int>(std::min<int64_t>(kLanes, span.last - n0));
    stage_elements(layout, x, 0, n0, len, st, 0);
    stage_params(layout, params, len, st, ws.rows);
    forward_chunk<kReverse>(c, st, ws.rows);
    for (int e = 0; e < len; ++e) y[n0 + e] = encode<XS>(st.out[e]);
    chunk_sums[chunks++] = static_cast<double>(pairwise_sum(st.terms, len));
  }
  return pairwise_sum(chunk_sums, chunks);
}

template <class CT, class XS, class PS, bool kReverse>
int backward_tile(const SplineLayout& layout, const spline::Constants<CT> c, const SplineBackwardTensors& io,
                  int64_t b, int64_t start, int64_t end) {
  const int64_t numel = layout.select.numel;
  const XS* grad_y = static_cast<const XS*>(io.grad_y) + b * numel;
  const XS* x = static_cast<const XS*>(io.x) + b * numel;
  XS* grad_x = static_cast<XS*>(io.grad_x) + b * numel;
  const PS* params = static_cast<const PS*>(io.params) + b * layout.params_stride;
  PS* grad_params = static_cast<PS*>(io.grad_params) + b * layout.params_stride;
  const CT g_logdet = static_cast<const CT*>(io.grad_logdet)[b];
  const Span span(layout, start, end);
  copy_range(grad_y, grad_x, start, span.first);
  copy_range(grad_y, grad_x, span.last, end);
  Workspace<CT> ws(layout.bins, true);
  Stage<CT>& st = *ws.stage;
  for (int e = 0; e < kLanes; ++e) st.g_logdet[e] = g_logdet;
  for (int64_t n0 = span.first; n0 < span.last; n0 += kLanes) {
    const int len = static_cast<int>(std::min<int64_t>(kLanes, span.last - n0));
    stage_elements(layout, x, 0, n0, len, st, 0);
    stage_params(layout, params, len, st, ws.rows);
    for (int e = 0; e < len; ++e) st.g[e] = decode<CT>(grad_y[n0 + e]);
    for (int e = len; e < st.lanes; ++e) st.g[e] = CT(0);
    backward_chunk<kReverse>(c, st, ws.rows, ws.grad_rows);
    for (int e = 0; e < len; ++e) grad_x[n0 + e] = encode<XS>(st.out[e]);
    write_parameter_grads(layout, st, len, ws.grad_rows, grad_params);
  }
  return 0;
}

// Short samples, several to a chunk: samples [b0, b1), each whole (spline_tiles.h: packs_samples), each one's
// transformable span [lo, hi) staged after the previous one's, so that a [B, 8] vector flow (4 transformed
// elements a sample) fills a chunk's vectors instead of a quarter of one. Each sample's log-det is the pairwise
// sum of its own terms, the same bits as forward_tile gives it (a sample of one chunk there too).
template <class CT, class XS, class PS, bool kReverse>
void forward_samples(const SplineLayout& layout, const spline::Constants<CT> c, const SplineForwardTensors& io,
                     int64_t b0, int64_t b1, double* sums) {
  const int64_t numel = layout.select.numel, lo = layout.select.lo, hi = layout.select.hi;
  const int span = static_cast<int>(hi - lo);
  const int64_t per_chunk = kLanes / span;
  const XS* x = static_cast<const XS*>(io.x);
  XS* y = static_cast<XS*>(io.y);
  const PS* params = static_cast<const PS*>(io.params);
  Workspace<CT> ws(layout.bins, false);
  Stage<CT>& st = *ws.stage;
  for (int64_t first = b0; first < b1; first += per_chunk) {
    const int64_t last = std::min(b1, first + per_chunk);
    for (int64_t b = first; b < last; ++b) {
      copy_range(x + b * numel, y + b * numel, 0, lo);
      copy_range(x + b * numel, y + b * numel, hi, numel);
      stage_elements(layout, x + b * numel, b * layout.params_stride, lo, span, st, int((b - first) * span));
    }
    const int len = static_cast<int>((last - first) * span);
    stage_params(layout, params, len, st, ws.rows);
    forward_chunk<kReverse>(c, st, ws.rows);
    for (int64_t b = first; b < last; ++b) {
      const int e0 = static_cast<int>((b - first) * span);
      XS* y_b = y + b * numel + lo;
      for (int e = 0; e < span; ++e) y_b[e] = encode<XS>(st.out[e0 + e]);
      sums[b - b0] = static_cast<double>(pairwise_sum(st.terms + e0, span));
    }
  }
}

template <class CT, class XS, class PS, bool kReverse>
int backward_samples(const SplineLayout& layout, const spline::Constants<CT> c, const SplineBackwardTensors& io,
                     int64_t b0, int64_t b1) {
  const int64_t numel = layout.select.numel, lo = layout.select.lo, hi = layout.select.hi;
  const int span = static_cast<int>(hi - lo);
  const int64_t per_chunk = kLanes / span;
  const XS* grad_y = static_cast<const XS*>(io.grad_y);
  const XS* x = static_cast<const XS*>(io.x);
  XS* grad_x = static_cast<XS*>(io.grad_x);
  const PS* params = static_cast<const PS*>(io.params);
  PS* grad_params = static_cast<PS*>(io.grad_params);
  const CT* grad_logdet = static_cast<const CT*>(io.grad_logdet);
  Workspace<CT> ws(layout.bins, true);
  Stage<CT>& st = *ws.stage;
  for (int64_t first = b0; first < b1; first += per_chunk) {
    const int64_t last = std::min(b1, first + per_chunk);
    for (int64_t b = first; b < last; ++b) {
      const int e0 = static_cast<int>((b - first) * span);
      copy_range(grad_y + b * numel, grad_x + b * numel, 0, lo);
      copy_range(grad_y + b * numel, grad_x + b * numel, hi, numel);
      stage_elements(layout, x + b * numel, b * layout.params_stride, lo, span, st, e0);
      const XS* g_b = grad_y + b * numel + lo;
      for (int e = 0; e < span; ++e) st.g[e0 + e] = decode<CT>(g_b[e]), st.g_logdet[e0 + e] = grad_logdet[b];
    }
    const int len = static_cast<int>((last - first) * span);
    stage_params(layout, params, len, st, ws.rows);
    for (int e = len; e < st.lanes; ++e) st.g[e] = CT(0), st.g_logdet[e] = CT(0);
    backward_chunk<kReverse>(c, st, ws.rows, ws.grad_rows);
    for (int64_t b = first; b < last; ++b) {
      const int e0 = static_cast<int>((b - first) * span);
      XS* grad_x_b = grad_x + b * numel + lo;
      for (int e = 0; e < span; ++e) grad_x_b[e] = encode<XS>(st.out[e0 + e]);
    }
    write_parameter_grads(layout, st, len, ws.grad_rows, grad_params);
  }
  return 0;
}

template <class T>
struct Type {
  using type = T;
};

// f(Type<storage>{}) for a dtype code.
template <class F>
auto with_storage(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat64: return f(Type<double>{});
    case DType::kFloat16: return f(Type<Float16>{});
    case DType::kBFloat16: return f(Type<BFloat16>{});
    default: return f(Type<float>{});
  }
}

// Kernel<CT, XS, PS, reverse>::run(layout, constants, io, args...) for the call's dtypes and direction; CT is
// double for float64 x, else float.
template <template <class, class, class, bool> class Kernel, class Tensors, class... Args>
auto dispatch(const SplineLayout& layout, const SplineConfig& config, const Tensors& io, Args... args) {
  return with_storage(io.x_dtype, [&](auto xs) {
    return with_storage(io.params_dtype, [&](auto ps) {
      using XS = typename decltype(xs)::type;
      using PS = typename decltype(ps)::type;
      using CT = std::conditional_t<std::is_same_v<XS, double>, double, float>;
      const spline::Constants<CT> c = spline::make_constants<CT>(config, layout.bins);
      return config.reverse ? Kernel<CT, XS, PS, true>::run(layout, c, io, args...)
                            : Kernel<CT, XS, PS, false>::run(layout, c, io, args...);
    });
  });
}

template <class CT, class XS, class PS, bool kReverse>
struct ForwardTile {
  static double run(const SplineLayout& l, const spline::Constants<CT>& c, const SplineForwardTensors& io,
                    int64_t b, int64_t start, int64_t end) {
    return forward_tile<CT, XS, PS, kReverse>(l, c, io, b, start, end);
  }
};

template <class CT, class XS, class PS, bool kReverse>
struct BackwardTile {
  static int run(const SplineLayout& l, const spline::Constants<CT>& c, const SplineBackwardTensors& io, int64_t b,
                 int64_t start, int64_t end) {
    return backward_tile<CT, XS, PS, kReverse>(l, c, io, b, start, end);
  }
};

template <class CT, class XS, class PS, bool kReverse>
struct ForwardSamples {
  static int run(const SplineLayout& l, const spline::Constants<CT>& c, const SplineForwardTensors& io, int64_t b0,
                 int64_t b1, double* sums) {
    forward_samples<CT, XS, PS, kReverse>(l, c, io, b0, b1, sums);
    return 0;
  }
};

template <class CT, class XS, class PS, bool kReverse>
struct BackwardSamples {
  static int run(const SplineLayout& l, const spline::Constants<CT>& c, const SplineBackwardTensors& io, int64_t b0,
                 int64_t b1) {
    return backward_samples<CT, XS, PS, kReverse>(l, c, io, b0, b1);
  }
};

double spline_forward(const SplineLayout& layout, const SplineConfig& config, const SplineForwardTensors& io,
                      int64_t b, int64_t start, int64_t end) {
  return dispatch<ForwardTile>(layout, config, io, b, start, end);
}

void spline_backward(const SplineLayout& layout, const SplineConfig& config, const SplineBackwardTensors& io,
                     int64_t b, int64_t start, int64_t end) {
  dispatch<BackwardTile>(layout, config, io, b, start, end);
}

void spline_forward_samples(const SplineLayout& layout, const SplineConfig& config, const SplineForwardTensors& io,
                            int64_t b0, int64_t b1, double* sums) {
  dispatch<ForwardSamples>(layout, config, io, b0, b1, sums);
}

void spline_backward_samples(const SplineLayout& layout, const SplineConfig& config, const SplineBackwardTensors& io,
                             int64_t b0, int64_t b1) {
  dispatch<BackwardSamples>(layout, config, io, b0, b1);
}

}  // namespace

const SplineTileKernels kSplineTileKernels = {NF_ISA_STRING, &spline_forward, &spline_backward,
                                             &spline_forward_samples, &spline_backward_samples};

}  // namespace NF_ISA_NAME
}  // namespace cpu
}  // namespace nf_kernels
