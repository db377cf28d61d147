// Spline coupling forward/inverse and backward on CUDA, torch-free (see spline_kernels.cuh).
//
// One thread per element: a block owns a chunk of kChunk consecutive elements of one sample, each thread kPerThread
// of them kThreads apart (consecutive threads, consecutive elements: x and y move in coalesced accesses, and so
// does each parameter j of a channel's elements, which lie R apart in params' flat layout, spline_layout.h). A
// sample of at most kMaxTeam * kPerThread elements (a vector flow's) goes to a team instead: the fewest lanes of a
// warp, a power of two, that give each at most kPerThread of its elements, so a block holds kThreads / team whole
// samples and no thread idles (a block a 64-element sample would leave 3 of 4 threads without work). The
// element's math is csrc/spline_math.h's, in registers: the parameters are read from global memory in each of its
// passes (the pass over the widths and heights twice, the backward's gradient pass a third time; the later reads
// hit the cache), and nothing per bin is stored.
//
// Selection: the range [lo, hi), the checkerboard parity from checkerboard_bits (coupling_layout.h: multiply-high
// divisions, no division instruction), or the uint8 mask. An element's channel and position in it come from a
// multiply-high division by R as well (32-bit when the span fits).
//
// Log-det: each thread adds its elements in order, the block adds its threads in a fixed tree (shuffles, then the
// warps' sums in order), and thread 0 writes the sample's log-det (one chunk a sample) or the chunk's partial sum,
// which a second kernel adds per sample in a fixed order; a team adds its lanes in a shuffle tree and its first lane
// writes the log-det. No atomics: the order depends on the shapes alone.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../spline_math.h"
#include "spline_kernels.cuh"

namespace nf_kernels {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPerThread = 4;
constexpr int64_t kChunk = int64_t(kThreads) * kPerThread;
constexpr int kMaxTeam = 32;  // lanes: a team stays in one warp, its sum a shuffle tree
constexpr unsigned kFullWarp = 0xffffffffu;

template <class T>
using compute_t = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

template <class CT, class S>
__device__ __forceinline__ CT decode(S v) {
  if constexpr (std::is_same<S, __half>::value) return static_cast<CT>(__half2float(v));
  else if constexpr (std::is_same<S, __nv_bfloat16>::value) return static_cast<CT>(__bfloat162float(v));
  else return static_cast<CT>(v);
}

template <class S, class CT>
__device__ __forceinline__ S encode(CT v) {
  if constexpr (std::is_same<S, __half>::value) return __float2half_rn(static_cast<float>(v));
  else if constexpr (std::is_same<S, __nv_bfloat16>::value) return __float2bfloat16_rn(static_cast<float>(v));
  else return static_cast<S>(v);
}

// One element's parameters: parameter j at base[j * stride], read through the read-only path.
template <class CT, class PT>
struct ParamReader {
  const PT* base;
  int64_t stride;
  __device__ __forceinline__ CT operator()(int j) const { return decode<CT>(__ldg(base + j * stride)); }
};

template <class CT, class PT>
struct ParamWriter {
  PT* base;
  int64_t stride;
  __device__ __forceinline__ void operator()(int j, CT v) const { base[j * stride] = encode<PT>(v); }
};

// Everything a launch needs besides the op's arguments, computed on the host.
struct SplineLaunch {
  uint32_t chunks;               // a sample
  FastDiv<uint32_t> by_chunks;   // item -> sample
  FastDiv<uint32_t> by_inner32;  // local -> channel, when narrow
  FastDiv<uint64_t> by_inner64;
  bool narrow;                   // every local index of the span below 2^32
  int team_log2;                 // >= 0: a sample a team of 2^team_log2 lanes; -1: a block a chunk
  CheckerboardIndex checkerboard;  // pattern kPatternCheckerboard only
};

// Whether flat element n (in [lo, hi)) of a sample is transformed.
__device__ __forceinline__ bool selected(const FlatLayout& layout, const SplineLaunch& lp, int64_t n) {
  if (layout.pattern == kPatternCheckerboard) return (checkerboard_bits<1>(lp.checkerboard, n) & 1u) != 0;
  if (layout.pattern == kPatternMask) return layout.transformed[n] != 0;
  return true;
}

// Where the parameters of flat element n (in [lo, hi)) of a sample start, relative to the sample's.
__device__ __forceinline__ int64_t params_offset(const SplineLayout& layout, const SplineLaunch& lp, int64_t n) {
  const int64_t local = n - layout.select.lo;
  int64_t channel;
  if (lp.narrow) {
    channel = fast_div(lp.by_inner32, static_cast<uint32_t>(local));
  } else {
    channel = static_cast<int64_t>(fast_div(lp.by_inner64, static_cast<uint64_t>(local)));
  }
  const int64_t position = local - channel * layout.inner;
  return channel * (spline_params_per_element(layout.bins) * layout.inner) + position;
}

// The sum of v over the block in a fixed order (shuffle tree in each warp, then the warps' sums); valid in thread 0.
template <class T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T warp_sums[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullWarp, v, offset);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? warp_sums[lane] : T(0);
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullWarp, v, offset);
  }
  return v;
}

// The sum of v over each team of 2^team_log2 lanes (a fixed shuffle tree); valid in the team's first lane. Every
// lane of the warp takes part.
template <class T>
__device__ __forceinline__ T team_sum(T v, int team_log2) {
  const int team = 1 << team_log2;
  for (int offset = team >> 1; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullWarp, v, offset, team);
  return v;
}

struct Item {
  int64_t sample, first;  // the thread's sample (0 when !valid) and its first element in it
  int stride;             // between the thread's elements
  bool valid;             // false: a team past the batch, with nothing to do
  bool leader;            // the thread that writes the sample's (or the chunk's) log-det
};

__device__ __forceinline__ Item thread_item(const SplineLaunch& lp, int64_t batch) {
  if (lp.team_log2 >= 0) {
    const int64_t b = static_cast<int64_t>(blockIdx.x) * (kThreads >> lp.team_log2) + (threadIdx.x >> lp.team_log2);
    const int lane = threadIdx.x & ((1 << lp.team_log2) - 1);
    return {b < batch ? b : 0, lane, 1 << lp.team_log2, b < batch, lane == 0 && b < batch};
  }
  const uint32_t item = blockIdx.x;
  const uint32_t b = fast_div(lp.by_chunks, item);
  return {static_cast<int64_t>(b), static_cast<int64_t>(item - b * lp.chunks) * kChunk + threadIdx.x, kThreads, true,
          threadIdx.x == 0};
}

// Blocks an SM each kernel is compiled for. Left to itself, ptxas gives the float64 forward 80 registers and spills
// (2 to 10 STL/LDL an instantiation, 8 to 24 B of stack); bound to 2 blocks it takes up to 128 and spills none.
template <class XT>
constexpr int forward_min_blocks() {
  return sizeof(XT) == 8 ? 2 : 1;
}

template <class XT, class PT, bool kReverse>
__global__ void __launch_bounds__(kThreads, (forward_min_blocks<XT>()))
    spline_forward_kernel(SplineForwardArgs args, SplineLaunch lp, spline::Constants<compute_t<XT>> c,
                          compute_t<XT>* partials) {
  using CT = compute_t<XT>;
  const SplineLayout& layout = args.layout;
  const FlatLayout& sel = layout.select;
  const Item it = thread_item(lp, sel.batch);
  const XT* x = static_cast<const XT*>(args.x) + it.sample * sel.numel;
  XT* y = static_cast<XT*>(args.y) + it.sample * sel.numel;
  const PT* params = static_cast<const PT*>(args.params) + it.sample * layout.params_stride;
  CT acc = CT(0);
#pragma unroll 1
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t n = it.first + i * it.stride;
    if (!it.valid || n >= sel.numel) break;
    const CT v = decode<CT>(x[n]);
    if (n < sel.lo || n >= sel.hi) {
      y[n] = x[n];
      continue;
    }
    const ParamReader<CT, PT> p{params + params_offset(layout, lp, n), layout.inner};
    const spline::Result<CT> r = spline::element_forward<kReverse>(p, c, v, selected(sel, lp, n));
    y[n] = encode<XT>(r.value);
    acc += r.logdet;
  }
  acc = lp.team_log2 >= 0 ? team_sum(acc, lp.team_log2) : block_sum(acc);
  if (it.leader) {
    CT* logdet = static_cast<CT*>(args.logdet);
    if (lp.chunks == 1)
      logdet[it.sample] = acc;  // gpu_code: own scalar (the sample's log-det)
    else
      partials[blockIdx.x] = acc;  // gpu_code: own scalar (the chunk's partial)
  }
}

// logdet[b] = the sum of sample b's chunk partials, a warp a sample: each lane adds every 32nd in order, then a
// fixed shuffle tree.
template <class CT>
__global__ void __launch_bounds__(kThreads)
    spline_sum_partials_kernel(const CT* partials, CT* logdet, int64_t batch, int64_t chunks) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  CT acc = CT(0);
  if (b < batch)
    for (int64_t i = lane; i < chunks; i += 32) acc += partials[b * chunks + i];
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_down_sync(kFullWarp, acc, offset);
  if (lane == 0 && b < batch) logdet[b] = acc;
}

template <class XT, class PT, bool kReverse>
__global__ void __launch_bounds__(kThreads)
    spline_backward_kernel(SplineBackwardArgs args, SplineLaunch lp, spline::Constants<compute_t<XT>> c) {
  using CT = compute_t<XT>;
  const SplineLayout& layout = args.layout;
  const FlatLayout& sel = layout.select;
  const Item it = thread_item(lp, sel.batch);
  const int64_t x_offset = it.sample * sel.numel, p_offset = it.sample * layout.params_stride;
  const XT* grad_y = static_cast<const XT*>(args.grad_y) + x_offset;
  const XT* x = static_cast<const XT*>(args.x) + x_offset;
  XT* grad_x = static_cast<XT*>(args.grad_x) + x_offset;
  const PT* params = static_cast<const PT*>(args.params) + p_offset;
  PT* grad_params = static_cast<PT*>(args.grad_params) + p_offset;
  const CT g_logdet = it.valid ? static_cast<const CT*>(args.grad_logdet)[it.sample] : CT(0);  // gpu_code: own scalar
#pragma unroll 1
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t n = it.first + i * it.stride;
    if (!it.valid || n >= sel.numel) break;
    if (n < sel.lo || n >= sel.hi) {
      grad_x[n] = grad_y[n];
      continue;
    }
    const int64_t offset = params_offset(layout, lp, n);
    const ParamReader<CT, PT> p{params + offset, layout.inner};
    const ParamWriter<CT, PT> sink{grad_params + offset, layout.inner};
    grad_x[n] = encode<XT>(spline::element_backward<kReverse>(p, c, decode<CT>(x[n]), decode<CT>(grad_y[n]), g_logdet,
                                                              selected(sel, lp, n), sink));
  }
}

template <class T>
struct Type {
  using type = T;
};

template <class F>
cudaError_t with_type(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f(Type<float>{});
    case DType::kFloat64: return f(Type<double>{});
    case DType::kFloat16: return f(Type<__half>{});
    case DType::kBFloat16: return f(Type<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

// f(Type<XT>{}, Type<PT>{}, constants) for the dtypes of x and params, the constants in x's compute type.
template <class F>
cudaError_t with_types(DType x_dtype, DType params_dtype, const SplineLayout& layout, const SplineConfig& config,
                       F&& f) {
  return with_type(x_dtype, [&](auto xt) -> cudaError_t {
    return with_type(params_dtype, [&](auto pt) -> cudaError_t {
      using CT = compute_t<typename decltype(xt)::type>;
      return f(xt, pt, spline::make_constants<CT>(config, layout.bins));
    });
  });
}

int64_t chunks_of(const SplineLayout& layout) { return (layout.select.numel + kChunk - 1) / kChunk; }

// The launch's numbers; an error where the grid's 32-bit item numbering cannot hold the call.
cudaError_t prepare(const SplineLayout& layout, SplineLaunch& lp, unsigned& blocks) {
  const FlatLayout& sel = layout.select;
  const int64_t chunks = chunks_of(layout), items = sel.batch * chunks;
  if (items > 0x7fffffff || layout.inner < 1) return cudaErrorInvalidConfiguration;
  if (sel.pattern == kPatternCheckerboard && (sel.width < 1 || sel.plane < sel.width)) return cudaErrorInvalidValue;
  lp = SplineLaunch{};
  lp.chunks = static_cast<uint32_t>(chunks);
  lp.by_chunks = make_fast_div(lp.chunks);
  lp.narrow = sel.hi - sel.lo <= (int64_t(1) << 32) && layout.inner < (int64_t(1) << 32);
  if (lp.narrow) lp.by_inner32 = make_fast_div(static_cast<uint32_t>(layout.inner));
  lp.by_inner64 = make_fast_div(static_cast<uint64_t>(layout.inner));
  if (sel.pattern == kPatternCheckerboard) lp.checkerboard = make_checkerboard_index(sel);
  lp.team_log2 = -1;
  blocks = static_cast<unsigned>(items);
  if (sel.numel <= int64_t(kMaxTeam) * kPerThread) {  // one chunk a sample (chunks == 1): teams of whole samples
    lp.team_log2 = 0;
    while ((int64_t(kPerThread) << lp.team_log2) < sel.numel) ++lp.team_log2;
    const int64_t per_block = kThreads >> lp.team_log2;
    blocks = static_cast<unsigned>((sel.batch + per_block - 1) / per_block);
  }
  return cudaSuccess;
}

}  // namespace

int64_t spline_forward_partials(const SplineLayout& layout) {
  const int64_t chunks = chunks_of(layout);
  return chunks > 1 ? layout.select.batch * chunks : 0;
}

cudaError_t launch_spline_forward(const SplineForwardArgs& args, void* workspace, cudaStream_t stream) {
  const SplineLayout& layout = args.layout;
  if (layout.select.batch == 0 || layout.select.numel == 0) return cudaSuccess;
  SplineLaunch lp;
  unsigned blocks = 0;
  if (cudaError_t error = prepare(layout, lp, blocks)) return error;
  if (lp.chunks > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  return with_types(args.x_dtype, args.params_dtype, layout, args.config, [&](auto xt, auto pt, auto c) -> cudaError_t {
    using XT = typename decltype(xt)::type;
    using PT = typename decltype(pt)::type;
    using CT = compute_t<XT>;
    CT* partials = static_cast<CT*>(workspace);
    if (args.config.reverse)
      spline_forward_kernel<XT, PT, true><<<blocks, kThreads, 0, stream>>>(args, lp, c, partials);
    else
      spline_forward_kernel<XT, PT, false><<<blocks, kThreads, 0, stream>>>(args, lp, c, partials);
    if (lp.chunks > 1) {
      const auto sum_blocks = static_cast<unsigned>((layout.select.batch + kWarps - 1) / kWarps);
      spline_sum_partials_kernel<CT><<<sum_blocks, kThreads, 0, stream>>>(partials, static_cast<CT*>(args.logdet),
                                                                          layout.select.batch, lp.chunks);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_spline_backward(const SplineBackwardArgs& args, cudaStream_t stream) {
  const SplineLayout& layout = args.layout;
  if (layout.select.batch == 0 || layout.select.numel == 0) return cudaSuccess;
  SplineLaunch lp;
  unsigned blocks = 0;
  if (cudaError_t error = prepare(layout, lp, blocks)) return error;
  return with_types(args.x_dtype, args.params_dtype, layout, args.config, [&](auto xt, auto pt, auto c) -> cudaError_t {
    using XT = typename decltype(xt)::type;
    using PT = typename decltype(pt)::type;
    if (args.config.reverse)
      spline_backward_kernel<XT, PT, true><<<blocks, kThreads, 0, stream>>>(args, lp, c);
    else
      spline_backward_kernel<XT, PT, false><<<blocks, kThreads, 0, stream>>>(args, lp, c);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace nf_kernels
