// Fused coupling forward/inverse and backward on CUDA, torch-free (see coupling_kernels.cuh).
//
// Grid: `nblk` blocks per sample, flattened on x (blockIdx.x = b * nblk + block), each striding over its sample
// (grid-stride loop). A thread handles groups of G consecutive elements, G = 16 bytes of x: one 16-byte vector
// load when the tensors allow it (checked per launch), element by element otherwise, with the same assignment of
// elements to threads either way, so the log-det's summation order never depends on alignment. Offsets are
// int64. Arithmetic runs in float (double for float64 x) through the shared math of coupling_math.h.
//
// Log-det: each thread sums its elements in order, a block adds its threads with warp shuffles then shared
// memory, in a fixed tree; with several blocks per sample a second kernel adds the block partials in order.
// No atomics, so the same inputs on the same device give the same bits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../coupling_math.h"
#include "coupling_kernels.cuh"

namespace nf_kernels {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kBlocksPerSm = 4;  // enough resident blocks to hide memory latency

template <class T>
using compute_t = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

// Elements a thread handles at once: 16 bytes of x.
template <class XT>
constexpr int kGroup = static_cast<int>(16 / sizeof(XT));

// G elements of one tensor, aligned so that a load is one (or a few) 16-byte vector instructions.
template <class T, int G>
struct alignas(sizeof(T) * G < 16 ? sizeof(T) * G : 16) Pack {
  T v[G];
};

template <class CT, class T>
__device__ __forceinline__ CT to_compute(T v) {
  if constexpr (std::is_same<T, __half>::value) {
    return static_cast<CT>(__half2float(v));
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return static_cast<CT>(__bfloat162float(v));
  } else {
    return static_cast<CT>(v);
  }
}

template <class T, class CT>
__device__ __forceinline__ T from_compute(CT v) {
  if constexpr (std::is_same<T, __half>::value) {
    return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return __float2bfloat16_rn(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

// out[k] = src[at + k] for the G elements of a group; `count` of them exist (fewer only at a ragged tail, and
// only on the element-by-element path).
template <int G, class CT, class T>
__device__ __forceinline__ void load_group(const T* src, int64_t at, int count, bool vector, CT (&out)[G]) {
  if (vector) {
    const Pack<T, G> pack = *reinterpret_cast<const Pack<T, G>*>(src + at);
#pragma unroll
    for (int k = 0; k < G; ++k) out[k] = to_compute<CT>(pack.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < G; ++k) out[k] = k < count ? to_compute<CT>(src[at + k]) : CT(0);
  }
}

template <int G, class CT, class T>
__device__ __forceinline__ void store_group(T* dst, int64_t at, int count, bool vector, const CT (&in)[G]) {
  if (vector) {
    Pack<T, G> pack;
#pragma unroll
    for (int k = 0; k < G; ++k) pack.v[k] = from_compute<T>(in[k]);
    *reinterpret_cast<Pack<T, G>*>(dst + at) = pack;
  } else {
#pragma unroll
    for (int k = 0; k < G; ++k)
      if (k < count) dst[at + k] = from_compute<T>(in[k]);
  }
}

// Which of the group's elements n0 .. n0 + G - 1 are transformed (see is_transformed in coupling_layout.h); the
// checkerboard position is found with one 64-bit division per group, then 32-bit arithmetic (plane < 2^31).
template <int G>
__device__ __forceinline__ void group_selection(const FlatLayout& layout, int64_t n0, int count, bool (&sel)[G]) {
  if (layout.pattern == kPatternCheckerboard) {
    const int plane = static_cast<int>(layout.plane), width = static_cast<int>(layout.width);
    int r = static_cast<int>(n0 % layout.plane);
#pragma unroll
    for (int k = 0; k < G; ++k) {
      const int i = r / width;
      sel[k] = k < count && ((i + (r - i * width)) & 1) == layout.parity;
      if (++r == plane) r = 0;
    }
  } else {
#pragma unroll
    for (int k = 0; k < G; ++k) {
      const int64_t n = n0 + k;
      sel[k] = k < count && n >= layout.lo && n < layout.hi &&
               (layout.pattern != kPatternMask || layout.transformed[n] != 0);
    }
  }
}

// s_raw and t of a group's elements (zeros where h has none). h exists for [lo, hi) only: on the vector path lo
// and hi are multiples of G, so a group is entirely inside (callers only ask then); element by element, each
// read is checked.
template <int kScale, int G, class CT, class HT>
__device__ __forceinline__ void load_h_group(const HT* h, int64_t h_base, const FlatLayout& layout, int64_t n0,
                                             int count, bool vector, CT (&sv)[G], CT (&tv)[G]) {
  if (vector) {
    load_group(h, h_base + n0 + layout.t_offset, G, true, tv);
    if (kScale != kAdditive) load_group(h, h_base + n0, G, true, sv);
    return;
  }
#pragma unroll
  for (int k = 0; k < G; ++k) {
    const int64_t n = n0 + k;
    const bool inside = k < count && n >= layout.lo && n < layout.hi;
    tv[k] = inside ? to_compute<CT>(h[h_base + n + layout.t_offset]) : CT(0);
    sv[k] = inside && kScale != kAdditive ? to_compute<CT>(h[h_base + n]) : CT(0);
  }
}

template <int kScale, class T>
__device__ __forceinline__ T step(const CouplingConfig& c, T x, T a, T t) {
  if (c.reverse)
    return c.shift_first ? coupling_step<kScale, true, true>(x, a, t) : coupling_step<kScale, false, true>(x, a, t);
  return c.shift_first ? coupling_step<kScale, true, false>(x, a, t) : coupling_step<kScale, false, false>(x, a, t);
}

template <int kScale, class T>
__device__ __forceinline__ StepGrad<T> step_grad(const CouplingConfig& c, T g, T g_logdet, T x, T a, T t) {
  if (c.reverse)
    return c.shift_first ? coupling_step_grad<kScale, true, true>(g, g_logdet, x, a, t)
                         : coupling_step_grad<kScale, false, true>(g, g_logdet, x, a, t);
  return c.shift_first ? coupling_step_grad<kScale, true, false>(g, g_logdet, x, a, t)
                       : coupling_step_grad<kScale, false, false>(g, g_logdet, x, a, t);
}

// The sum of v over the block, in a fixed order; valid in thread 0.
template <class T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T warp_sums[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kWarps ? warp_sums[lane] : T(0);
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  return v;
}

// The part of sample b that block `blk` of `nblk` owns; returns this thread's sum of log-scales.
template <class XT, class HT, int kScale>
__device__ compute_t<XT> forward_blocks(const ForwardArgs& args, bool vector, int64_t b, int64_t blk, int64_t nblk) {
  using CT = compute_t<XT>;
  constexpr int G = kGroup<XT>;
  const FlatLayout& layout = args.layout;
  const int64_t numel = layout.numel;
  const XT* x = static_cast<const XT*>(args.x) + b * numel;
  XT* y = static_cast<XT*>(args.y) + b * numel;
  const HT* h = static_cast<const HT*>(args.h);
  const int64_t h_base = b * layout.h_stride - layout.lo;  // h index of element n's s_raw: h_base + n
  const CT clamp = static_cast<CT>(args.config.clamp);
  CT acc = CT(0);
  for (int64_t n0 = (blk * kThreads + threadIdx.x) * G; n0 < numel; n0 += nblk * kThreads * G) {
    const int count = numel - n0 < G ? static_cast<int>(numel - n0) : G;
    CT xv[G], sv[G], tv[G], yv[G];
    bool sel[G];
    load_group(x, n0, count, vector, xv);
    group_selection(layout, n0, count, sel);
    bool any = false;
#pragma unroll
    for (int k = 0; k < G; ++k) any |= sel[k];
    if (any) {
      load_h_group<kScale>(h, h_base, layout, n0, count, vector, sv, tv);
#pragma unroll
      for (int k = 0; k < G; ++k) {
        const CT a = kScale == kAdditive ? CT(0) : log_scale<kScale>(sv[k], clamp);
        yv[k] = sel[k] ? step<kScale>(args.config, xv[k], a, tv[k]) : xv[k];
        acc += sel[k] ? a : CT(0);
      }
    } else {
#pragma unroll
      for (int k = 0; k < G; ++k) yv[k] = xv[k];
    }
    store_group(y, n0, count, vector, yv);
  }
  return acc;
}

template <class XT, class HT>
__global__ void __launch_bounds__(kThreads)
    coupling_forward_kernel(ForwardArgs args, bool vector, int64_t nblk, compute_t<XT>* partials) {
  using CT = compute_t<XT>;
  const int64_t b = blockIdx.x / nblk, blk = blockIdx.x % nblk;
  CT acc;
  switch (args.config.scale) {
    case kExp: acc = forward_blocks<XT, HT, kExp>(args, vector, b, blk, nblk); break;
    case kTanh: acc = forward_blocks<XT, HT, kTanh>(args, vector, b, blk, nblk); break;
    case kAtan: acc = forward_blocks<XT, HT, kAtan>(args, vector, b, blk, nblk); break;
    case kSigmoid: acc = forward_blocks<XT, HT, kSigmoid>(args, vector, b, blk, nblk); break;
    default: acc = forward_blocks<XT, HT, kAdditive>(args, vector, b, blk, nblk); break;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) {
    const CT total = args.config.reverse ? -acc : acc;
    if (nblk == 1)
      static_cast<CT*>(args.logdet)[b] = total;
    else
      partials[blockIdx.x] = total;
  }
}

// logdet[b] = the nblk partials of sample b, added in a fixed order.
template <class CT>
__global__ void __launch_bounds__(kThreads) sum_partials_kernel(const CT* partials, CT* logdet, int64_t nblk) {
  const int64_t b = blockIdx.x;
  CT acc = CT(0);
  for (int64_t i = threadIdx.x; i < nblk; i += kThreads) acc += partials[b * nblk + i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) logdet[b] = acc;
}

template <class XT, class HT, int kScale>
__device__ void backward_blocks(const BackwardArgs& args, bool vector, int64_t b, int64_t blk, int64_t nblk) {
  using CT = compute_t<XT>;
  constexpr int G = kGroup<XT>;
  const FlatLayout& layout = args.layout;
  const int64_t numel = layout.numel;
  const XT* grad_y = static_cast<const XT*>(args.grad_y) + b * numel;
  const XT* x = static_cast<const XT*>(args.x) + b * numel;
  XT* grad_x = static_cast<XT*>(args.grad_x) + b * numel;
  const HT* h = static_cast<const HT*>(args.h);
  HT* grad_h = static_cast<HT*>(args.grad_h);
  const int64_t h_base = b * layout.h_stride - layout.lo;
  const CT clamp = static_cast<CT>(args.config.clamp);
  const CT g_logdet = static_cast<const CT*>(args.grad_logdet)[b];
  for (int64_t n0 = (blk * kThreads + threadIdx.x) * G; n0 < numel; n0 += nblk * kThreads * G) {
    const int count = numel - n0 < G ? static_cast<int>(numel - n0) : G;
    CT gv[G], xv[G], sv[G], tv[G], gxv[G], gsv[G], gtv[G];
    bool sel[G];
    load_group(grad_y, n0, count, vector, gv);
    // The part of the group inside [lo, hi), where h and grad_h exist: all or nothing on the vector path.
    const int64_t first = n0 < layout.lo ? layout.lo : n0;
    const int64_t last = n0 + count > layout.hi ? layout.hi : n0 + count;
    if (first >= last) {
      store_group(grad_x, n0, count, vector, gv);  // passed through: the gradient too
      continue;
    }
    group_selection(layout, n0, count, sel);
    load_group(x, n0, count, vector, xv);
    load_h_group<kScale>(h, h_base, layout, n0, count, vector, sv, tv);
#pragma unroll
    for (int k = 0; k < G; ++k) {
      const CT a = kScale == kAdditive ? CT(0) : log_scale<kScale>(sv[k], clamp);
      const StepGrad<CT> grad = step_grad<kScale>(args.config, gv[k], g_logdet, xv[k], a, tv[k]);
      // Kept elements: the gradient passes through and grad_h is zero (whatever h holds there, even NaN).
      gxv[k] = sel[k] ? grad.x : gv[k];
      gtv[k] = sel[k] ? grad.t : CT(0);
      gsv[k] = sel[k] && kScale != kAdditive ? grad.a * log_scale_grad<kScale>(sv[k], clamp) : CT(0);
    }
    store_group(grad_x, n0, count, vector, gxv);
    if (vector) {
      store_group(grad_h, h_base + n0 + layout.t_offset, G, true, gtv);
      if (kScale != kAdditive) store_group(grad_h, h_base + n0, G, true, gsv);
    } else {
#pragma unroll
      for (int k = 0; k < G; ++k) {
        if (n0 + k >= first && n0 + k < last) {
          grad_h[h_base + n0 + k + layout.t_offset] = from_compute<HT>(gtv[k]);
          if (kScale != kAdditive) grad_h[h_base + n0 + k] = from_compute<HT>(gsv[k]);
        }
      }
    }
  }
}

template <class XT, class HT>
__global__ void __launch_bounds__(kThreads) coupling_backward_kernel(BackwardArgs args, bool vector, int64_t nblk) {
  const int64_t b = blockIdx.x / nblk, blk = blockIdx.x % nblk;
  switch (args.config.scale) {
    case kExp: backward_blocks<XT, HT, kExp>(args, vector, b, blk, nblk); break;
    case kTanh: backward_blocks<XT, HT, kTanh>(args, vector, b, blk, nblk); break;
    case kAtan: backward_blocks<XT, HT, kAtan>(args, vector, b, blk, nblk); break;
    case kSigmoid: backward_blocks<XT, HT, kSigmoid>(args, vector, b, blk, nblk); break;
    default: backward_blocks<XT, HT, kAdditive>(args, vector, b, blk, nblk); break;
  }
}

template <class T>
struct Type {
  using type = T;
};

// Calls f(Type<XT>{}, Type<HT>{}) with the element types of the two dtype codes.
template <class F>
cudaError_t with_types(DType x_dtype, DType h_dtype, F&& f) {
  auto with_h = [&](auto xt) -> cudaError_t {
    switch (h_dtype) {
      case DType::kFloat32: return f(xt, Type<float>{});
      case DType::kFloat64: return f(xt, Type<double>{});
      case DType::kFloat16: return f(xt, Type<__half>{});
      case DType::kBFloat16: return f(xt, Type<__nv_bfloat16>{});
    }
    return cudaErrorInvalidValue;
  };
  switch (x_dtype) {
    case DType::kFloat32: return with_h(Type<float>{});
    case DType::kFloat64: return with_h(Type<double>{});
    case DType::kFloat16: return with_h(Type<__half>{});
    case DType::kBFloat16: return with_h(Type<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

int64_t element_size(DType dtype) { return dtype == DType::kFloat64 ? 8 : dtype == DType::kFloat32 ? 4 : 2; }

bool aligned_to(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

// The vector path needs every group to start on a vector boundary, in x and in h, and to lie entirely inside
// or outside [lo, hi).
bool vector_path(const FlatLayout& layout, DType x_dtype, DType h_dtype, const void* const* x_like, int nx,
                 const void* const* h_like, int nh) {
  const int64_t group = 16 / element_size(x_dtype);
  if (layout.numel % group || layout.lo % group || layout.hi % group || layout.h_stride % group ||
      layout.t_offset % group)
    return false;
  const int64_t h_bytes = group * element_size(h_dtype) < 16 ? group * element_size(h_dtype) : 16;
  for (int i = 0; i < nx; ++i)
    if (!aligned_to(x_like[i], 16)) return false;
  for (int i = 0; i < nh; ++i)
    if (!aligned_to(h_like[i], h_bytes)) return false;
  return true;
}

cudaError_t check_grid(const FlatLayout& layout, int64_t nblk) {
  return layout.batch * nblk > 0x7fffffff ? cudaErrorInvalidConfiguration : cudaSuccess;
}

}  // namespace

int64_t blocks_per_sample(const FlatLayout& layout, DType x_dtype, int sm_count) {
  const int64_t group = 16 / element_size(x_dtype);
  const int64_t groups = (layout.numel + group - 1) / group;
  const int64_t most = (groups + kThreads - 1) / kThreads;  // beyond this a block would have no work
  const int64_t wanted = (static_cast<int64_t>(sm_count) * kBlocksPerSm + layout.batch - 1) / layout.batch;
  return wanted < 1 ? 1 : (wanted > most ? most : wanted);
}

cudaError_t launch_forward(const ForwardArgs& args, void* workspace, int sm_count, cudaStream_t stream) {
  const FlatLayout& layout = args.layout;
  if (layout.batch == 0 || layout.numel == 0) return cudaSuccess;
  const int64_t nblk = blocks_per_sample(layout, args.x_dtype, sm_count);
  if (cudaError_t error = check_grid(layout, nblk)) return error;
  if (nblk > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  const void* x_like[] = {args.x, args.y};
  const void* h_like[] = {args.h};
  const bool vector = vector_path(layout, args.x_dtype, args.h_dtype, x_like, 2, h_like, 1);
  return with_types(args.x_dtype, args.h_dtype, [&](auto xt, auto ht) -> cudaError_t {
    using XT = typename decltype(xt)::type;
    using HT = typename decltype(ht)::type;
    using CT = compute_t<XT>;
    CT* partials = static_cast<CT*>(workspace);
    coupling_forward_kernel<XT, HT><<<static_cast<unsigned>(layout.batch * nblk), kThreads, 0, stream>>>(
        args, vector, nblk, partials);
    if (nblk > 1) {
      sum_partials_kernel<CT><<<static_cast<unsigned>(layout.batch), kThreads, 0, stream>>>(
          partials, static_cast<CT*>(args.logdet), nblk);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_backward(const BackwardArgs& args, int sm_count, cudaStream_t stream) {
  const FlatLayout& layout = args.layout;
  if (layout.batch == 0 || layout.numel == 0) return cudaSuccess;
  const int64_t nblk = blocks_per_sample(layout, args.x_dtype, sm_count);
  if (cudaError_t error = check_grid(layout, nblk)) return error;
  const void* x_like[] = {args.grad_y, args.x, args.grad_x};
  const void* h_like[] = {args.h, args.grad_h};
  const bool vector = vector_path(layout, args.x_dtype, args.h_dtype, x_like, 3, h_like, 2);
  return with_types(args.x_dtype, args.h_dtype, [&](auto xt, auto ht) -> cudaError_t {
    using XT = typename decltype(xt)::type;
    using HT = typename decltype(ht)::type;
    coupling_backward_kernel<XT, HT><<<static_cast<unsigned>(layout.batch * nblk), kThreads, 0, stream>>>(
        args, vector, nblk);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace nf_kernels
