// The CPU spline tile kernels (see spline_tiles.h): each transformed element runs the shared math of
// csrc/spline_math.h on its parameters read in place (parameter j of an element R elements after parameter j - 1,
// the layout of spline_layout.h), converting from the storage dtype on the way in and back on the way out.
//
// The log-det is summed as the affine tiles sum theirs: a chunk's terms pairwise in the compute type, the chunks'
// sums pairwise in double, chunks starting where the tile's transformable span does: the order depends on the
// shapes alone.
#include "spline_tiles.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "../spline_math.h"
#include "half_bits.h"
#include "pairwise_sum.h"
#include "tile_kernels.h"

namespace nf_kernels {
namespace cpu {
namespace {

constexpr int64_t kChunk = 256;
constexpr int64_t kChunksPerTile = (kTileElements + kChunk - 1) / kChunk;

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

// One element's parameters, read in place: parameter j at base[j * stride].
template <class CT, class PS>
struct ParamReader {
  const PS* base;
  int64_t stride;
  CT operator()(int j) const { return decode<CT>(base[j * stride]); }
};

template <class CT, class PS>
struct ParamWriter {
  PS* base;
  int64_t stride;
  void operator()(int j, CT v) const { base[j * stride] = encode<PS>(v); }
};

// Walks the transformable elements of a tile in flat order: whether each is selected, and where its parameters
// start (channel and position in the channel counted incrementally: no division per element).
struct ElementWalk {
  const SplineLayout& layout;
  int64_t per_channel;  // P * R: elements of params per channel
  int64_t channel, position;

  ElementWalk(const SplineLayout& l, int64_t first)
      : layout(l),
        per_channel(spline_params_per_element(l.bins) * l.inner),
        channel((first - l.select.lo) / l.inner),
        position((first - l.select.lo) % l.inner) {}

  int64_t params_offset() const { return channel * per_channel + position; }
  bool selected(int64_t n) const {
    return layout.select.pattern == kPatternRange || is_transformed(layout.select, n);
  }
  void next() {
    if (++position == layout.inner) position = 0, ++channel;
  }
};

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

template <class CT, class XS, class PS, bool kReverse>
double forward_tile(const SplineLayout& layout, const spline::Constants<CT>& c, const SplineForwardTensors& io,
                    int64_t b, int64_t start, int64_t end) {
  const int64_t numel = layout.select.numel;
  const XS* x = static_cast<const XS*>(io.x) + b * numel;
  XS* y = static_cast<XS*>(io.y) + b * numel;
  const PS* params = static_cast<const PS*>(io.params) + b * layout.params_stride;
  const Span span(layout, start, end);
  copy_range(x, y, start, span.first);
  copy_range(x, y, span.last, end);
  ElementWalk walk(layout, span.first);
  CT terms[kChunk];
  double chunk_sums[kChunksPerTile];
  int64_t chunks = 0;
  for (int64_t n0 = span.first; n0 < span.last; n0 += kChunk) {
    const int64_t len = std::min(kChunk, span.last - n0);
    for (int64_t k = 0; k < len; ++k, walk.next()) {
      const int64_t n = n0 + k;
      const ParamReader<CT, PS> p{params + walk.params_offset(), layout.inner};
      const spline::Result<CT> r = spline::element_forward<kReverse>(p, c, decode<CT>(x[n]), walk.selected(n));
      y[n] = encode<XS>(r.value);
      terms[k] = r.logdet;
    }
    chunk_sums[chunks++] = static_cast<double>(pairwise_sum(terms, len));
  }
  return pairwise_sum(chunk_sums, chunks);
}

template <class CT, class XS, class PS, bool kReverse>
int backward_tile(const SplineLayout& layout, const spline::Constants<CT>& c, const SplineBackwardTensors& io,
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
  ElementWalk walk(layout, span.first);
  for (int64_t n = span.first; n < span.last; ++n, walk.next()) {
    const int64_t offset = walk.params_offset();
    const ParamReader<CT, PS> p{params + offset, layout.inner};
    const ParamWriter<CT, PS> sink{grad_params + offset, layout.inner};
    grad_x[n] = encode<XS>(spline::element_backward<kReverse>(p, c, decode<CT>(x[n]), decode<CT>(grad_y[n]),
                                                               g_logdet, walk.selected(n), sink));
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

// Tile<CT, XS, PS, reverse>::run for the call's dtypes and direction; CT is double for float64 x, else float.
template <template <class, class, class, bool> class Tile, class Tensors>
auto dispatch(const SplineLayout& layout, const SplineConfig& config, const Tensors& io, int64_t b, int64_t start,
              int64_t end) {
  return with_storage(io.x_dtype, [&](auto xs) {
    return with_storage(io.params_dtype, [&](auto ps) {
      using XS = typename decltype(xs)::type;
      using PS = typename decltype(ps)::type;
      using CT = std::conditional_t<std::is_same_v<XS, double>, double, float>;
      const spline::Constants<CT> c = spline::make_constants<CT>(config, layout.bins);
      return config.reverse ? Tile<CT, XS, PS, true>::run(layout, c, io, b, start, end)
                            : Tile<CT, XS, PS, false>::run(layout, c, io, b, start, end);
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

}  // namespace

double spline_forward_tile(const SplineLayout& layout, const SplineConfig& config, const SplineForwardTensors& io,
                           int64_t b, int64_t start, int64_t end) {
  return dispatch<ForwardTile>(layout, config, io, b, start, end);
}

void spline_backward_tile(const SplineLayout& layout, const SplineConfig& config, const SplineBackwardTensors& io,
                          int64_t b, int64_t start, int64_t end) {
  dispatch<BackwardTile>(layout, config, io, b, start, end);
}

}  // namespace cpu
}  // namespace nf_kernels
