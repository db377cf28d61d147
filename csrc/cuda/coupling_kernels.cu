// Fused coupling forward/inverse and backward on CUDA, torch-free (see coupling_kernels.cuh).
//
// Work split. A thread handles groups of G consecutive elements of a sample, G = 16 bytes of x. A *team* of T
// threads (a power of two, at most a warp) owns a *chunk*: `rounds` passes over T * U consecutive groups, thread m
// of the team taking groups m, m + T, ..., m + (U - 1) T of each pass (consecutive threads, consecutive 16 bytes).
// Each pass issues all its loads (U = 2 groups of x, and of s and t, or the team's blocks of them) before using
// any, so a thread has U independent 16-byte loads of each tensor in flight. Small samples ([65536, 64] vectors) get
// a team of fewer than 32 threads per sample, several samples a warp; large ones are cut into chunks of a warp
// each. A sample is `chunks` chunks, the grid's work items are the batch * chunks (sample, chunk) pairs, and a grid
// of one whole wave (the occupancy of the kernel times the multiprocessors, fewer blocks only when there are fewer
// items) strides over them. The shapes-only part of this (the plan, the sizes the vector path takes, where a lane's
// groups and blocks lie) is work_split.h, which csrc/tests/test_coupling.cpp walks on the host.
//
// Memory access. When every tensor and offset allows it (checked per launch: vector_path) every global access of
// the data is 128-bit: a group of x is one 16-byte load and a group of y one 16-byte store of a value built in
// registers; h as wide as x or wider, one to four. A tensor narrower than x, whose group is less than 16 bytes (h
// of 16-bit dtype for float x, or of float for double x; the bool mask, a byte an element), is read and written
// by the team as 16-byte blocks of the pass's region, each lane taking its groups from the block's lane with warp
// shuffles (block_exchange.h): the same bytes, in 128-bit accesses. Otherwise (misaligned tensors, sizes that are
// not whole groups or blocks) the same groups are read and written element by element, one group at a time in the
// same order, so the log-det's summation order never depends on alignment. The only narrow accesses left on the
// vector path are each program's own scalars (the log-det it stores, grad_logdet[b]), on the lines marked
// "gpu_code: own scalar" (nf_kernels/benchmarking/gpu_code.py checks it in the SASS). Offsets in a sample are int64,
// sample and chunk numbers 32-bit (checked). Arithmetic runs in float (double for float64 x) through the shared
// math of coupling_math.h.
//
// Selection. The half split is the range [lo, hi); the checkerboard parity comes from checkerboard_bits
// (coupling_layout.h): two multiply-high divisions per group, none per element; a bool mask is read from memory
// (on the vector path as the team's 16-byte blocks, a bit an element after nonzero_bytes); a compact h's table of
// positions (pattern "gather") an entry an element, on the element path only.
//
// Parameters. s_raw and t sit at base(p) + s_offset and base(p) + t_offset of a sample's h (coupling_layout.h): one
// run each for [s_raw, t] and [t, s_raw]; for (t, s_raw) channel pairs a group or block of the vector path lies in
// one channel (pair_inner is whole units, vector_sizes), so one pair_shift serves it; shorter channels and a compact
// h take the element path, each element's position computed (load_params, store_params).
//
// Log-det: each thread sums its elements in order, the team adds its threads with warp shuffles in a fixed tree,
// and the team's first thread writes the sample's log-det (one chunk a sample) or the chunk's partial sum, which a
// second kernel adds in a fixed order. No atomics, and an order that depends on the shapes only (not on the grid
// or the device), so the same inputs give the same bits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "../coupling_math.h"
#include "block_exchange.h"
#include "coupling_kernels.cuh"
#include "work_split.h"

namespace nf_kernels {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullWarp = 0xffffffffu;  // every shuffle runs on the whole warp

// Resident blocks a multiprocessor must hold (__launch_bounds__), which caps the registers ptxas may use at
// 65536 / (256 * blocks): without a bound ptxas settles on 80 registers and spills a few. 3 blocks (80 registers) for
// the forward of 16- and 32-bit x: at 4 (64 registers) the 16-bit vector forwards of the peers' maps spill, since a
// group of 8 elements holds 8 values of each input. 2 (128 registers) for every backward, which holds four inputs:
// at 80 registers the backward of h narrower than x spills (33 STL/LDL). 2 for double arithmetic. With these no
// kernel spills (the SASS has no STL/LDL), and 2 blocks of 256 threads still keep some 64 KB of loads in flight an
// SM, twice what an H200 needs to cover its memory latency at full bandwidth.
template <class XT, class HT, bool kBackward>
constexpr int min_blocks() {
  if (sizeof(XT) == 8 || kBackward) return 2;
  return 3;
}

template <class T>
using compute_t = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

template <class T>
using bits_t = typename std::conditional<sizeof(T) == 2, uint16_t,
                                         typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type>::type;

template <class T, int kBytes>
__device__ __forceinline__ bits_t<T> get_bits(const Words<kBytes>& g, int k) {
  if constexpr (sizeof(T) == 2) {
    return static_cast<uint16_t>(g.w[k >> 1] >> ((k & 1) * 16));
  } else if constexpr (sizeof(T) == 4) {
    return g.w[k];
  } else {
    return (static_cast<uint64_t>(g.w[2 * k + 1]) << 32) | g.w[2 * k];
  }
}

template <class T, int kBytes>
__device__ __forceinline__ void set_bits(Words<kBytes>& g, int k, bits_t<T> v) {
  if constexpr (sizeof(T) == 2) {
    uint32_t& word = g.w[k >> 1];
    word = (k & 1) ? (word & 0xffffu) | (static_cast<uint32_t>(v) << 16) : (word & 0xffff0000u) | v;
  } else if constexpr (sizeof(T) == 4) {
    g.w[k] = v;
  } else {
    g.w[2 * k] = static_cast<uint32_t>(v);
    g.w[2 * k + 1] = static_cast<uint32_t>(v >> 32);
  }
}

template <class CT, class T>
__device__ __forceinline__ CT decode(bits_t<T> v) {
  if constexpr (std::is_same<T, __half>::value) {
    return static_cast<CT>(__half2float(__ushort_as_half(v)));
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return static_cast<CT>(__bfloat162float(__ushort_as_bfloat16(v)));
  } else if constexpr (std::is_same<T, float>::value) {
    return static_cast<CT>(__uint_as_float(v));
  } else {
    return static_cast<CT>(__longlong_as_double(static_cast<long long>(v)));
  }
}

template <class T, class CT>
__device__ __forceinline__ bits_t<T> encode(CT v) {
  if constexpr (std::is_same<T, __half>::value) {
    return __half_as_ushort(__float2half_rn(static_cast<float>(v)));
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(v)));
  } else if constexpr (std::is_same<T, float>::value) {
    return __float_as_uint(static_cast<float>(v));
  } else {
    return static_cast<uint64_t>(__double_as_longlong(static_cast<double>(v)));
  }
}

// One 16-byte block at src + at (16-byte aligned): one 128-bit load through the read-only path (inputs never alias
// an output), or one 128-bit store (__stwb: a plain write-back store, but one vector instruction, which a struct
// assignment may split).
template <class T>
__device__ __forceinline__ Words<16> load_block(const T* src, int64_t at) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(src + at));
  return {{v.x, v.y, v.z, v.w}};
}

template <class T>
__device__ __forceinline__ void store_block(T* dst, int64_t at, const Words<16>& b) {
  __stwb(reinterpret_cast<uint4*>(dst + at), make_uint4(b.w[0], b.w[1], b.w[2], b.w[3]));
}

// The elements of a group named by bit k of `present` (bits 0 .. G-1). On the vector path a group is all present or
// all absent and a whole number of 16-byte blocks (x, and h as wide as x or wider; a narrower h goes through the
// team's blocks instead), the address 16-byte aligned (checked per launch); element by element otherwise.
template <bool kVector, class T, int G>
__device__ __forceinline__ Words<sizeof(T) * G> load_group(const T* src, int64_t at, uint32_t present) {
  constexpr int kBytes = sizeof(T) * G;
  Words<kBytes> g;
  if constexpr (kVector) {
    static_assert(kBytes % 16 == 0, "the vector path moves whole 16-byte blocks");
#pragma unroll
    for (int q = 0; q < kBytes / 16; ++q) {
      const Words<16> b = load_block(src, at + q * (16 / static_cast<int>(sizeof(T))));
#pragma unroll
      for (int i = 0; i < 4; ++i) g.w[4 * q + i] = b.w[i];
    }
  } else {
    const bits_t<T>* p = reinterpret_cast<const bits_t<T>*>(src) + at;
#pragma unroll
    for (int q = 0; q < kBytes / 4; ++q) g.w[q] = 0;
#pragma unroll
    for (int k = 0; k < G; ++k)
      if ((present >> k) & 1) set_bits<T>(g, k, p[k]);
  }
  return g;
}

template <bool kVector, class T, int G>
__device__ __forceinline__ void store_group(T* dst, int64_t at, uint32_t present, const Words<sizeof(T) * G>& g) {
  constexpr int kBytes = sizeof(T) * G;
  if constexpr (kVector) {
    static_assert(kBytes % 16 == 0, "the vector path moves whole 16-byte blocks");
#pragma unroll
    for (int q = 0; q < kBytes / 16; ++q)
      store_block(dst, at + q * (16 / static_cast<int>(sizeof(T))),
                  Words<16>{{g.w[4 * q], g.w[4 * q + 1], g.w[4 * q + 2], g.w[4 * q + 3]}});
  } else {
    bits_t<T>* p = reinterpret_cast<bits_t<T>*>(dst) + at;
#pragma unroll
    for (int k = 0; k < G; ++k)
      if ((present >> k) & 1) p[k] = get_bits<T>(g, k);
  }
}

// base(p) - p for element n (p = n - lo) of channel pairs, 0 for the other layouts. On the vector path the units
// (groups, blocks) lie inside one channel (vector_sizes), so one shift serves a unit's elements.
__device__ __forceinline__ int64_t pair_shift(const FlatLayout& layout, int64_t n) {
  return layout.pair_inner == 0 ? 0 : h_base(layout, n - layout.lo) - (n - layout.lo);
}

// The parameter at `offset` (s_offset or t_offset) of the group's elements named by `present`, from a sample's h
// (its pointer at b * h_stride - lo): one run from n0 + shift + offset on the vector path and for the layouts whose
// parameters are runs; each element's own position lo + base(p) + offset for channel pairs and a compact h on the
// element path (coupling_layout.h).
template <bool kVector, class T, int G>
__device__ __forceinline__ Words<sizeof(T) * G> load_params(const T* h, const FlatLayout& layout, int64_t n0,
                                                            int64_t shift, int64_t offset, uint32_t present) {
  if constexpr (!kVector) {
    if (!params_in_runs(layout)) {
      Words<sizeof(T) * G> g;
      const bits_t<T>* p = reinterpret_cast<const bits_t<T>*>(h) + layout.lo + offset;
#pragma unroll
      for (int q = 0; q < static_cast<int>(sizeof(T)) * G / 4; ++q) g.w[q] = 0;
#pragma unroll
      for (int k = 0; k < G; ++k)
        if ((present >> k) & 1) set_bits<T>(g, k, p[h_base(layout, h_position(layout, n0 + k))]);
      return g;
    }
  }
  return load_group<kVector, T, G>(h, n0 + shift + offset, present);
}

template <bool kVector, class T, int G>
__device__ __forceinline__ void store_params(T* h, const FlatLayout& layout, int64_t n0, int64_t shift, int64_t offset,
                                             uint32_t present, const Words<sizeof(T) * G>& g) {
  if constexpr (!kVector) {
    if (!params_in_runs(layout)) {
      bits_t<T>* p = reinterpret_cast<bits_t<T>*>(h) + layout.lo + offset;
#pragma unroll
      for (int k = 0; k < G; ++k)
        if ((present >> k) & 1) p[h_base(layout, h_position(layout, n0 + k))] = get_bits<T>(g, k);
      return;
    }
  }
  store_group<kVector, T, G>(h, n0 + shift + offset, present, g);
}

// Everything a kernel needs besides the op's arguments, computed on the host per launch.
struct LaunchParams {
  int team_log2;            // T = 1 << team_log2 threads a chunk
  int team;                 // T (the kernels read it, and pass, from the parameters: no register holds them)
  int pass;                 // elements of a pass, T * U * G
  int rounds;               // passes of T * U groups a chunk
  uint32_t chunks;          // a sample
  uint32_t items;           // batch * chunks
  uint32_t item_step;       // items the grid strides over: blocks * warps a block * teams a warp
  FastDiv<uint32_t> by_chunks;
  CheckerboardIndex checkerboard;  // pattern kPatternCheckerboard only
};

// Which elements of a group are transformed, for the patterns computed from indices: `inside` (those in [lo, hi)),
// filtered by the checkerboard parity.
template <int G>
__device__ __forceinline__ uint32_t index_selection(const FlatLayout& layout, const CheckerboardIndex& checkerboard,
                                                    int64_t n0, uint32_t inside) {
  if (inside == 0 || layout.pattern != kPatternCheckerboard) return inside;
  return inside & checkerboard_bits<G>(checkerboard, n0);
}

// The same for every pattern on the element path, the mask read a byte an element and a compact h's table an entry
// an element (the vector path reads the mask in pass_selection, and never takes a compact h).
template <int G>
__device__ __forceinline__ uint32_t group_selection(const FlatLayout& layout, const CheckerboardIndex& checkerboard,
                                                    int64_t n0, uint32_t inside) {
  if (layout.pattern != kPatternMask && layout.pattern != kPatternGather)
    return index_selection<G>(layout, checkerboard, n0, inside);
  // The two reads directly, not is_transformed(): the compiler cannot drop its checkerboard branch (64-bit % and /
  // per element) from this loop, although that pattern never gets here.
  const bool mask = layout.pattern == kPatternMask;
  uint32_t bits = 0;
#pragma unroll
  for (int k = 0; k < G; ++k)
    if ((inside >> k) & 1)
      bits |= static_cast<uint32_t>(mask ? layout.transformed[n0 + k] != 0 : layout.h_index[n0 + k] >= 0) << k;
  return inside & bits;
}

// For h narrower than x the team moves a pass's h as 16-byte blocks, each lane one block of s and one of t (the t
// block t_offset elements further on). load_h_blocks loads this lane's (all zero when it has none);
// take_h_groups then gives each lane its U groups from the blocks' lanes. The kernels issue every load of a pass
// (the mask block's too) before the first shuffle waits for one.
struct HBlocks {
  Words<16> s, t;
};

template <class HT, bool kWithS>
__device__ __forceinline__ HBlocks load_h_blocks(const HT* h, const FlatLayout& layout, const TeamPass& p) {
  constexpr int kPerBlock = h_block_elements(sizeof(HT));
  const int64_t n = p.block_start(kPerBlock);
  HBlocks blocks{};
  if (h_block_present(layout, p, kPerBlock, n)) {
    const int64_t at = n + pair_shift(layout, n);
    blocks.t = load_block(h, at + layout.t_offset);
    if constexpr (kWithS) blocks.s = load_block(h, at + layout.s_offset);
  }
  return blocks;
}

template <class HT, int G, int U, bool kWithS>
__device__ __forceinline__ void take_h_groups(const HBlocks& blocks, const TeamPass& p, Words<sizeof(HT) * G> (&sg)[U],
                                              Words<sizeof(HT) * G> (&tg)[U]) {
  constexpr int kBytes = sizeof(HT) * G;
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int g = u * p.team + p.member;
    tg[u] = group_from_blocks<kBytes>(
        g, [&](int q, int lane) { return __shfl_sync(kFullWarp, blocks.t.w[q], lane, p.team); });
    if constexpr (kWithS)
      sg[u] = group_from_blocks<kBytes>(
          g, [&](int q, int lane) { return __shfl_sync(kFullWarp, blocks.s.w[q], lane, p.team); });
  }
}

// The reverse for grad_h: each lane gathers its block of grad_t (and grad_s) from the groups' lanes and stores it.
template <class HT, int G, int U, bool kWithS>
__device__ __forceinline__ void store_h_groups(HT* grad_h, const FlatLayout& layout, const TeamPass& p,
                                               const Words<sizeof(HT) * G> (&gsg)[U],
                                               const Words<sizeof(HT) * G> (&gtg)[U]) {
  constexpr int kBytes = sizeof(HT) * G, kPerBlock = h_block_elements(sizeof(HT));
  const int64_t n = p.block_start(kPerBlock);
  const bool present = h_block_present(layout, p, kPerBlock, n);
  const int64_t at = present ? n + pair_shift(layout, n) : 0;
  const Words<16> tb = block_from_groups<kBytes, U>(
      p.member, p.team, [&](int u, int k, int lane) { return __shfl_sync(kFullWarp, gtg[u].w[k], lane, p.team); });
  if (present) store_block(grad_h, at + layout.t_offset, tb);
  if constexpr (kWithS) {
    const Words<16> sb = block_from_groups<kBytes, U>(
        p.member, p.team, [&](int u, int k, int lane) { return __shfl_sync(kFullWarp, gsg[u].w[k], lane, p.team); });
    if (present) store_block(grad_h, at + layout.s_offset, sb);
  }
}

// The mask pattern reads a pass's mask bytes as the team's 16-byte blocks (16 elements a block: numel is a whole
// number of blocks and the mask 16-byte aligned, checked per launch): the nonzero_bytes of this lane's block (0 when
// it has none to read). The kernels load it after the pass's data, so that waiting for it leaves their loads in
// flight, and keep one register of it instead of four.
__device__ __forceinline__ uint32_t load_mask_bits(const FlatLayout& layout, const TeamPass& p) {
  const int64_t n = p.block_start(kMaskBlockElements);
  if (layout.pattern != kPatternMask || !mask_block_present(layout, p, n)) return 0u;
  return nonzero_bytes(load_block(layout.transformed, n));
}

// The transformed elements of this lane's U groups of a pass on the vector path (`inside`: those in [lo, hi)); for
// the mask pattern from the team's mask blocks, each group's bits taken from its block's lane. The pattern is the
// same for the whole grid, so every lane of a warp shuffles together.
template <int G, int U>
__device__ __forceinline__ void pass_selection(const FlatLayout& layout, const CheckerboardIndex& checkerboard,
                                               const TeamPass& p, uint32_t mask_bits,
                                               const uint32_t (&inside)[U], uint32_t (&sel)[U]) {
  if (layout.pattern != kPatternMask) {
#pragma unroll
    for (int u = 0; u < U; ++u) sel[u] = index_selection<G>(layout, checkerboard, p.group_start<G>(u), inside[u]);
    return;
  }
#pragma unroll
  for (int u = 0; u < U; ++u)
    sel[u] = inside[u] & group_mask_bits<G>(u * p.team + p.member,
                                            [&](int lane) { return __shfl_sync(kFullWarp, mask_bits, lane, p.team); });
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

// The sum of v over the aligned team of `team` lanes (a power of two, at most 32), in a fixed tree; valid in the
// team's first lane. Every lane of the warp calls it.
template <class T>
__device__ __forceinline__ T team_sum(T v, int team) {
  for (int offset = team >> 1; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset, team);
  return v;
}

// The sum of v over the block, in a fixed order; valid in thread 0.
template <class T>
__device__ __forceinline__ T block_sum(T v) {
  __shared__ T warp_sums[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = team_sum(v, 32);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) v = team_sum(lane < kWarps ? warp_sums[lane] : T(0), 32);
  return v;
}

// Where this thread's team starts and strides. The loops run warp by warp: every lane of a warp runs the same
// iterations (team_sum's shuffles need them all), a team past the last item with `valid` false.
struct TeamCursor {
  int team, member;
  uint32_t first;  // the warp's first item (the grid strides by lp.item_step, read from the parameters)
  int in_warp;     // the team's index in its warp
};

__device__ __forceinline__ TeamCursor team_cursor(const LaunchParams& lp) {
  const int lane = threadIdx.x & 31;
  const uint32_t warp = blockIdx.x * kWarps + (threadIdx.x >> 5);
  return {lp.team, lane & (lp.team - 1), warp * (32u >> lp.team_log2), lane >> lp.team_log2};
}

// y for one group of x (and of s and t where `inside`), added to the log-scale sum in element order.
template <class XT, class HT, int kScale, bool kVector, int G, class CT>
__device__ __forceinline__ void forward_group(const CouplingConfig& config, CT clamp, CT low, XT* y, int64_t n0,
                                              uint32_t live,
                                              uint32_t inside, uint32_t sel, const Words<16>& xg,
                                              const Words<sizeof(HT) * G>& sg, const Words<sizeof(HT) * G>& tg,
                                              CT& acc) {
  if (!inside) {  // nothing of h here: y = x, bit for bit
    store_group<kVector, XT, G>(y, n0, live, xg);
    return;
  }
  Words<16> yg;
#pragma unroll
  for (int k = 0; k < G; ++k) {
    const bits_t<XT> x_bits = get_bits<XT>(xg, k);
    const CT xv = decode<CT, XT>(x_bits);
    const CT tv = decode<CT, HT>(get_bits<HT>(tg, k));
    const CT a = kScale == kAdditive ? CT(0) : log_scale<kScale>(decode<CT, HT>(get_bits<HT>(sg, k)), clamp, low);
    const bool on = (sel >> k) & 1;
    set_bits<XT>(yg, k, on ? encode<XT>(step<kScale>(config, xv, a, tv)) : x_bits);
    acc += on ? a : CT(0);
  }
  store_group<kVector, XT, G>(y, n0, live, yg);
}

// Forward of the items of this thread's team. The vector path issues the pass's loads (U groups of x, s, t, or
// the team's blocks of h and of the mask) before using any; the element path, the fallback, takes the same groups
// one at a time in the same order.
template <class XT, class HT, int kScale, bool kVector>
__device__ __forceinline__ void forward_items(const ForwardArgs& args, const LaunchParams& lp,
                                              compute_t<XT>* partials) {
  using CT = compute_t<XT>;
  using HWords = Words<sizeof(HT) * group_elements(sizeof(XT))>;
  constexpr int G = group_elements(sizeof(XT));
  constexpr int U = unroll_groups(sizeof(XT), sizeof(HT));
  constexpr bool kAdd = kScale == kAdditive;
  constexpr bool kHBlocks = h_in_blocks(sizeof(XT), sizeof(HT));
  const FlatLayout& layout = args.layout;
  const int64_t numel = layout.numel;
  const CT clamp = static_cast<CT>(args.config.clamp), low = static_cast<CT>(args.config.clamp_low);
  const TeamCursor tc = team_cursor(lp);
  for (uint32_t base = tc.first; base < lp.items; base += lp.item_step) {
    const uint32_t item = base + tc.in_warp;
    const bool valid = item < lp.items;
    const uint32_t b = valid ? fast_div(lp.by_chunks, item) : 0, chunk = valid ? item - b * lp.chunks : 0;
    const int64_t end = valid ? numel : 0;  // elements of the sample this team may touch
    const XT* x = static_cast<const XT*>(args.x) + static_cast<int64_t>(b) * numel;
    XT* y = static_cast<XT*>(args.y) + static_cast<int64_t>(b) * numel;
    const HT* h = static_cast<const HT*>(args.h) + (static_cast<int64_t>(b) * layout.h_stride - layout.lo);
    CT acc = CT(0);
    int64_t start = static_cast<int64_t>(chunk) * lp.rounds * lp.pass;
    for (int round = 0; round < lp.rounds; ++round, start += lp.pass) {
      const TeamPass p{start, end, tc.team, tc.member, lp.pass};
      if constexpr (kVector) {
        Words<16> xg[U];
        HWords sg[U], tg[U];
        uint32_t live[U], inside[U], sel[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t n0 = p.group_start<G>(u);
          live[u] = span_bits<G>(n0, 0, end);
          inside[u] = live[u] & span_bits<G>(n0, layout.lo, layout.hi);
          if (live[u]) xg[u] = load_group<true, XT, G>(x, n0, live[u]);
          if constexpr (!kHBlocks) {
            if (inside[u]) {
              const int64_t shift = pair_shift(layout, n0);
              tg[u] = load_params<true, HT, G>(h, layout, n0, shift, layout.t_offset, inside[u]);
              if (!kAdd) sg[u] = load_params<true, HT, G>(h, layout, n0, shift, layout.s_offset, inside[u]);
            }
          }
        }
        HBlocks h_blocks;
        if constexpr (kHBlocks) h_blocks = load_h_blocks<HT, !kAdd>(h, layout, p);
        const uint32_t mask_bits = load_mask_bits(layout, p);
        if constexpr (kHBlocks) take_h_groups<HT, G, U, !kAdd>(h_blocks, p, sg, tg);
        pass_selection<G, U>(layout, lp.checkerboard, p, mask_bits, inside, sel);
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (live[u])
            forward_group<XT, HT, kScale, true, G>(args.config, clamp, low, y, p.group_start<G>(u), live[u],
                                                   inside[u], sel[u], xg[u], sg[u], tg[u], acc);
      } else {
#pragma unroll 1
        for (int u = 0; u < U; ++u) {
          const int64_t n0 = p.group_start<G>(u);
          const uint32_t live = span_bits<G>(n0, 0, end);
          if (!live) continue;
          const uint32_t inside = live & span_bits<G>(n0, layout.lo, layout.hi);
          const uint32_t sel = group_selection<G>(layout, lp.checkerboard, n0, inside);
          const uint32_t params = layout.pattern == kPatternGather ? sel : inside;  // kept ones have none in a compact h
          const Words<16> xg = load_group<false, XT, G>(x, n0, live);
          const HWords tg = load_params<false, HT, G>(h, layout, n0, 0, layout.t_offset, params);
          const HWords sg = kAdd ? HWords{} : load_params<false, HT, G>(h, layout, n0, 0, layout.s_offset, params);
          forward_group<XT, HT, kScale, false, G>(args.config, clamp, low, y, n0, live, inside, sel, xg, sg, tg, acc);
        }
      }
    }
    acc = team_sum(acc, tc.team);
    if (valid && tc.member == 0) {
      const CT total = args.config.reverse ? CT(0) - acc : acc;  // 0 - acc: +0, not -0, when nothing is transformed
      if (lp.chunks == 1)
        static_cast<CT*>(args.logdet)[b] = total;  // gpu_code: own scalar (the sample's log-det)
      else
        partials[item] = total;  // gpu_code: own scalar (the chunk's partial)
    }
  }
}

template <class XT, class HT, bool kVector>
__global__ void __launch_bounds__(kThreads, (min_blocks<XT, HT, false>()))
    coupling_forward_kernel(ForwardArgs args, LaunchParams lp, compute_t<XT>* partials) {
  switch (args.config.scale) {
    case kExp: forward_items<XT, HT, kExp, kVector>(args, lp, partials); break;
    case kTanh: forward_items<XT, HT, kTanh, kVector>(args, lp, partials); break;
    case kAtan: forward_items<XT, HT, kAtan, kVector>(args, lp, partials); break;
    case kSigmoid: forward_items<XT, HT, kSigmoid, kVector>(args, lp, partials); break;
    case kRSigmoid: forward_items<XT, HT, kRSigmoid, kVector>(args, lp, partials); break;
    case kNflowsSigmoid: forward_items<XT, HT, kNflowsSigmoid, kVector>(args, lp, partials); break;
    case kSoftclamp: forward_items<XT, HT, kSoftclamp, kVector>(args, lp, partials); break;
    case kClip: forward_items<XT, HT, kClip, kVector>(args, lp, partials); break;
    case kFreiaAtan: forward_items<XT, HT, kFreiaAtan, kVector>(args, lp, partials); break;
    case kFreiaTanh: forward_items<XT, HT, kFreiaTanh, kVector>(args, lp, partials); break;
    case kFreiaSigmoid: forward_items<XT, HT, kFreiaSigmoid, kVector>(args, lp, partials); break;
    default: forward_items<XT, HT, kAdditive, kVector>(args, lp, partials); break;
  }
}

// logdet[b] = the `chunks` partials of sample b, added in a fixed order, by a team of kTeam threads a sample
// (a warp, or the block for many partials).
template <class CT, int kTeam>
__global__ void __launch_bounds__(kThreads)
    sum_partials_kernel(const CT* partials, CT* logdet, int64_t batch, int64_t chunks) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * (kThreads / kTeam) + threadIdx.x / kTeam;
  const int member = threadIdx.x % kTeam;
  CT acc = CT(0);
  if (b < batch) {
    const CT* p = partials + b * chunks;
#pragma unroll 4
    for (int64_t i = member; i < chunks; i += kTeam) acc += p[i];
  }
  acc = kTeam == 32 ? team_sum(acc, 32) : block_sum(acc);
  if (member == 0 && b < batch) logdet[b] = acc;
}

// grad_x and grad_h of one group: grad_x is stored, grad_s and grad_t land in gsg and gtg, and are stored here too
// unless the team stores grad_h in blocks (kStoreH false: the vector path with h narrower than x). Kept elements:
// the gradient passes through and grad_h is zero (whatever h holds there, even NaN). The additive coupling needs
// neither x nor h (grad_t = +-grad_y).
template <class XT, class HT, int kScale, bool kVector, bool kStoreH, int G, class CT>
__device__ __forceinline__ void backward_group(const CouplingConfig& config, CT clamp, CT low, CT g_logdet, XT* grad_x,
                                               HT* grad_h, const FlatLayout& layout, int64_t n0, uint32_t live,
                                               uint32_t inside, uint32_t sel, const Words<16>& gg,
                                               const Words<16>& xg, const Words<sizeof(HT) * G>& sg,
                                               const Words<sizeof(HT) * G>& tg, Words<sizeof(HT) * G>& gsg,
                                               Words<sizeof(HT) * G>& gtg) {
  if (!inside) {  // passed through: the gradient too
    store_group<kVector, XT, G>(grad_x, n0, live, gg);
    return;
  }
  Words<16> gxg;
#pragma unroll
  for (int k = 0; k < G; ++k) {
    const bits_t<XT> g_bits = get_bits<XT>(gg, k);
    const CT g = decode<CT, XT>(g_bits);
    const bool on = (sel >> k) & 1;
    if constexpr (kScale == kAdditive) {
      const StepGrad<CT> grad = step_grad<kScale>(config, g, g_logdet, CT(0), CT(0), CT(0));
      set_bits<XT>(gxg, k, g_bits);
      set_bits<HT>(gtg, k, on ? encode<HT>(grad.t) : bits_t<HT>(0));
    } else {
      const CT xv = decode<CT, XT>(get_bits<XT>(xg, k));
      const CT sv = decode<CT, HT>(get_bits<HT>(sg, k));
      const CT tv = decode<CT, HT>(get_bits<HT>(tg, k));
      const CT a = log_scale<kScale>(sv, clamp, low);
      const StepGrad<CT> grad = step_grad<kScale>(config, g, g_logdet, xv, a, tv);
      set_bits<XT>(gxg, k, on ? encode<XT>(grad.x) : g_bits);
      set_bits<HT>(gtg, k, on ? encode<HT>(grad.t) : bits_t<HT>(0));
      set_bits<HT>(gsg, k, on ? encode<HT>(grad.a * log_scale_grad<kScale>(sv, clamp)) : bits_t<HT>(0));
    }
  }
  store_group<kVector, XT, G>(grad_x, n0, live, gxg);
  if constexpr (kStoreH) {
    // A compact h's kept elements own no parameters (the transformed ones cover h); every other layout's do.
    const uint32_t params = layout.pattern == kPatternGather ? sel : inside;
    const int64_t shift = kVector ? pair_shift(layout, n0) : 0;
    store_params<kVector, HT, G>(grad_h, layout, n0, shift, layout.t_offset, params, gtg);
    if (kScale != kAdditive) store_params<kVector, HT, G>(grad_h, layout, n0, shift, layout.s_offset, params, gsg);
  }
}

template <class XT, class HT, int kScale, bool kVector>
__device__ __forceinline__ void backward_items(const BackwardArgs& args, const LaunchParams& lp) {
  using CT = compute_t<XT>;
  using HWords = Words<sizeof(HT) * group_elements(sizeof(XT))>;
  constexpr int G = group_elements(sizeof(XT));
  constexpr int U = unroll_groups(sizeof(XT), sizeof(HT));
  constexpr bool kAdd = kScale == kAdditive;
  constexpr bool kHBlocks = h_in_blocks(sizeof(XT), sizeof(HT));
  const FlatLayout& layout = args.layout;
  const int64_t numel = layout.numel;
  const CT clamp = static_cast<CT>(args.config.clamp), low = static_cast<CT>(args.config.clamp_low);
  const TeamCursor tc = team_cursor(lp);
  for (uint32_t base = tc.first; base < lp.items; base += lp.item_step) {
    const uint32_t item = base + tc.in_warp;
    const bool valid = item < lp.items;
    const uint32_t b = valid ? fast_div(lp.by_chunks, item) : 0, chunk = valid ? item - b * lp.chunks : 0;
    const int64_t end = valid ? numel : 0;
    const int64_t x_offset = static_cast<int64_t>(b) * numel;
    const XT* grad_y = static_cast<const XT*>(args.grad_y) + x_offset;
    const XT* x = static_cast<const XT*>(args.x) + x_offset;
    XT* grad_x = static_cast<XT*>(args.grad_x) + x_offset;
    const int64_t h_offset = static_cast<int64_t>(b) * layout.h_stride - layout.lo;
    const HT* h = static_cast<const HT*>(args.h) + h_offset;
    HT* grad_h = static_cast<HT*>(args.grad_h) + h_offset;
    const CT g_logdet = valid ? static_cast<const CT*>(args.grad_logdet)[b] : CT(0);  // gpu_code: own scalar
    int64_t start = static_cast<int64_t>(chunk) * lp.rounds * lp.pass;
    for (int round = 0; round < lp.rounds; ++round, start += lp.pass) {
      const TeamPass p{start, end, tc.team, tc.member, lp.pass};
      if constexpr (kVector) {
        Words<16> gg[U], xg[U];
        HWords sg[U], tg[U];
        uint32_t live[U], inside[U], sel[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t n0 = p.group_start<G>(u);
          live[u] = span_bits<G>(n0, 0, end);
          inside[u] = live[u] & span_bits<G>(n0, layout.lo, layout.hi);
          if (live[u]) gg[u] = load_group<true, XT, G>(grad_y, n0, live[u]);
          if (!kAdd && inside[u]) {
            xg[u] = load_group<true, XT, G>(x, n0, inside[u]);
            if constexpr (!kHBlocks) {
              const int64_t shift = pair_shift(layout, n0);
              tg[u] = load_params<true, HT, G>(h, layout, n0, shift, layout.t_offset, inside[u]);
              sg[u] = load_params<true, HT, G>(h, layout, n0, shift, layout.s_offset, inside[u]);
            }
          }
        }
        HBlocks h_blocks;
        if constexpr (kHBlocks && !kAdd) h_blocks = load_h_blocks<HT, true>(h, layout, p);
        const uint32_t mask_bits = load_mask_bits(layout, p);
        if constexpr (kHBlocks && !kAdd) take_h_groups<HT, G, U, true>(h_blocks, p, sg, tg);
        pass_selection<G, U>(layout, lp.checkerboard, p, mask_bits, inside, sel);
        HWords gsg[U] = {}, gtg[U] = {};
#pragma unroll
        for (int u = 0; u < U; ++u)
          if (live[u])
            backward_group<XT, HT, kScale, true, !kHBlocks, G>(args.config, clamp, low, g_logdet, grad_x, grad_h,
                                                               layout, p.group_start<G>(u), live[u],
                                                               inside[u], sel[u], gg[u], xg[u], sg[u], tg[u], gsg[u],
                                                               gtg[u]);
        if constexpr (kHBlocks) store_h_groups<HT, G, U, !kAdd>(grad_h, layout, p, gsg, gtg);
      } else {
#pragma unroll 1
        for (int u = 0; u < U; ++u) {
          const int64_t n0 = p.group_start<G>(u);
          const uint32_t live = span_bits<G>(n0, 0, end);
          if (!live) continue;
          const uint32_t inside = live & span_bits<G>(n0, layout.lo, layout.hi);
          const uint32_t sel = group_selection<G>(layout, lp.checkerboard, n0, inside);
          // The additive coupling reads neither x nor h; a compact h has no parameters for kept elements.
          const uint32_t needed = kAdd ? 0u : inside, params = kAdd ? 0u : layout.pattern == kPatternGather ? sel : inside;
          const Words<16> gg = load_group<false, XT, G>(grad_y, n0, live);
          const Words<16> xg = load_group<false, XT, G>(x, n0, needed);
          const HWords tg = load_params<false, HT, G>(h, layout, n0, 0, layout.t_offset, params);
          const HWords sg = load_params<false, HT, G>(h, layout, n0, 0, layout.s_offset, params);
          HWords gsg{}, gtg{};
          backward_group<XT, HT, kScale, false, true, G>(args.config, clamp, low, g_logdet, grad_x, grad_h, layout,
                                                         n0, live, inside, sel, gg, xg, sg, tg, gsg, gtg);
        }
      }
    }
  }
}

template <class XT, class HT, bool kVector>
__global__ void __launch_bounds__(kThreads, (min_blocks<XT, HT, true>()))
    coupling_backward_kernel(BackwardArgs args, LaunchParams lp) {
  switch (args.config.scale) {
    case kExp: backward_items<XT, HT, kExp, kVector>(args, lp); break;
    case kTanh: backward_items<XT, HT, kTanh, kVector>(args, lp); break;
    case kAtan: backward_items<XT, HT, kAtan, kVector>(args, lp); break;
    case kSigmoid: backward_items<XT, HT, kSigmoid, kVector>(args, lp); break;
    case kRSigmoid: backward_items<XT, HT, kRSigmoid, kVector>(args, lp); break;
    case kNflowsSigmoid: backward_items<XT, HT, kNflowsSigmoid, kVector>(args, lp); break;
    case kSoftclamp: backward_items<XT, HT, kSoftclamp, kVector>(args, lp); break;
    case kClip: backward_items<XT, HT, kClip, kVector>(args, lp); break;
    case kFreiaAtan: backward_items<XT, HT, kFreiaAtan, kVector>(args, lp); break;
    case kFreiaTanh: backward_items<XT, HT, kFreiaTanh, kVector>(args, lp); break;
    case kFreiaSigmoid: backward_items<XT, HT, kFreiaSigmoid, kVector>(args, lp); break;
    default: backward_items<XT, HT, kAdditive, kVector>(args, lp); break;
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

int element_size(DType dtype) { return dtype == DType::kFloat64 ? 8 : dtype == DType::kFloat32 ? 4 : 2; }

bool aligned_to(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

// The vector path: sizes and offsets it can take (vector_sizes), and every tensor it reads or writes 16-byte
// aligned, x-like, h-like and the mask.
bool vector_path(const FlatLayout& layout, DType x_dtype, DType h_dtype, const void* const* x_like, int nx,
                 const void* const* h_like, int nh) {
  if (!vector_sizes(layout, element_size(x_dtype), element_size(h_dtype))) return false;
  for (int i = 0; i < nx; ++i)
    if (!aligned_to(x_like[i], 16)) return false;
  for (int i = 0; i < nh; ++i)
    if (!aligned_to(h_like[i], 16)) return false;
  return layout.pattern != kPatternMask || aligned_to(layout.transformed, 16);
}

// The kernel's launch: checks the 32-bit item numbering, fills `lp`, and sizes the grid to at most one wave (the
// kernel's occupancy, cached per device, times the multiprocessors).
cudaError_t prepare(const FlatLayout& layout, const Plan& plan, const void* kernel, std::atomic<int>* occupancy_cache,
                    int sm_count, LaunchParams& lp, unsigned& blocks) {
  if (plan.items > 0x7fffffff || plan.rounds > 0x7fffffff) return cudaErrorInvalidConfiguration;
  if (layout.pattern == kPatternCheckerboard && (layout.width < 1 || layout.plane < layout.width))
    return cudaErrorInvalidValue;
  lp = LaunchParams{};
  lp.team_log2 = plan.team_log2;
  lp.team = 1 << plan.team_log2;
  lp.pass = plan.pass;
  lp.rounds = static_cast<int>(plan.rounds);
  lp.chunks = static_cast<uint32_t>(plan.chunks);
  lp.items = static_cast<uint32_t>(plan.items);
  lp.by_chunks = make_fast_div(lp.chunks);
  if (layout.pattern == kPatternCheckerboard) lp.checkerboard = make_checkerboard_index(layout);
  int device = 0;
  if (cudaError_t error = cudaGetDevice(&device)) return error;
  int per_sm = device < 64 ? occupancy_cache[device].load(std::memory_order_relaxed) : 0;
  if (per_sm == 0) {
    if (cudaError_t error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0)) return error;
    if (per_sm < 1) per_sm = 1;
    if (device < 64) occupancy_cache[device].store(per_sm, std::memory_order_relaxed);
  }
  const int64_t teams_per_block = kThreads >> plan.team_log2;
  const int64_t needed = (plan.items + teams_per_block - 1) / teams_per_block;
  const int64_t wave = static_cast<int64_t>(sm_count > 0 ? sm_count : 1) * per_sm;
  blocks = static_cast<unsigned>(needed < wave ? needed : wave);
  lp.item_step = static_cast<uint32_t>(blocks * teams_per_block);  // at most the items and a block: 32 bits
  return cudaSuccess;
}

// Blocks a multiprocessor holds, per device: one cache per kernel instantiation.
template <class XT, class HT, bool kBackward, bool kVector>
std::atomic<int>* occupancy_cache() {
  static std::atomic<int> cache[64];
  return cache;
}

}  // namespace

int64_t forward_partials(const FlatLayout& layout, DType x_dtype, DType h_dtype) {
  const Plan plan = make_plan(layout, element_size(x_dtype), element_size(h_dtype));
  return plan.chunks > 1 ? plan.items : 0;
}

cudaError_t launch_forward(const ForwardArgs& args, void* workspace, int sm_count, cudaStream_t stream) {
  const FlatLayout& layout = args.layout;
  if (layout.batch == 0 || layout.numel == 0) return cudaSuccess;
  const Plan plan = make_plan(layout, element_size(args.x_dtype), element_size(args.h_dtype));
  if (plan.chunks > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  const void* x_like[] = {args.x, args.y};
  const void* h_like[] = {args.h};
  const bool vector = vector_path(layout, args.x_dtype, args.h_dtype, x_like, 2, h_like, 1);
  return with_types(args.x_dtype, args.h_dtype, [&](auto xt, auto ht) -> cudaError_t {
    using XT = typename decltype(xt)::type;
    using HT = typename decltype(ht)::type;
    using CT = compute_t<XT>;
    auto kernel = vector ? coupling_forward_kernel<XT, HT, true> : coupling_forward_kernel<XT, HT, false>;
    LaunchParams lp;
    unsigned blocks = 0;
    std::atomic<int>* cache =
        vector ? occupancy_cache<XT, HT, false, true>() : occupancy_cache<XT, HT, false, false>();
    if (cudaError_t error = prepare(layout, plan, reinterpret_cast<const void*>(kernel), cache, sm_count, lp, blocks))
      return error;
    CT* partials = static_cast<CT*>(workspace);
    kernel<<<blocks, kThreads, 0, stream>>>(args, lp, partials);
    if (plan.chunks > 1) {
      CT* logdet = static_cast<CT*>(args.logdet);
      if (plan.chunks <= 32 * 16) {  // a warp a sample
        const auto sum_blocks = static_cast<unsigned>((layout.batch + kWarps - 1) / kWarps);
        sum_partials_kernel<CT, 32><<<sum_blocks, kThreads, 0, stream>>>(partials, logdet, layout.batch, plan.chunks);
      } else {
        sum_partials_kernel<CT, kThreads><<<static_cast<unsigned>(layout.batch), kThreads, 0, stream>>>(
            partials, logdet, layout.batch, plan.chunks);
      }
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_backward(const BackwardArgs& args, int sm_count, cudaStream_t stream) {
  const FlatLayout& layout = args.layout;
  if (layout.batch == 0 || layout.numel == 0) return cudaSuccess;
  const Plan plan = make_plan(layout, element_size(args.x_dtype), element_size(args.h_dtype));
  const void* x_like[] = {args.grad_y, args.x, args.grad_x};
  const void* h_like[] = {args.h, args.grad_h};
  const bool vector = vector_path(layout, args.x_dtype, args.h_dtype, x_like, 3, h_like, 2);
  return with_types(args.x_dtype, args.h_dtype, [&](auto xt, auto ht) -> cudaError_t {
    using XT = typename decltype(xt)::type;
    using HT = typename decltype(ht)::type;
    auto kernel = vector ? coupling_backward_kernel<XT, HT, true> : coupling_backward_kernel<XT, HT, false>;
    LaunchParams lp;
    unsigned blocks = 0;
    std::atomic<int>* cache =
        vector ? occupancy_cache<XT, HT, true, true>() : occupancy_cache<XT, HT, true, false>();
    if (cudaError_t error = prepare(layout, plan, reinterpret_cast<const void*>(kernel), cache, sm_count, lp, blocks))
      return error;
    kernel<<<blocks, kThreads, 0, stream>>>(args, lp);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace nf_kernels
