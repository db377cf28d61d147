// How the CUDA kernels cut a launch into work (the top of coupling_kernels.cu describes it): groups, the unroll,
// teams, chunks and passes, which sizes the vector path needs, and where a lane's groups and 16-byte blocks lie in
// a pass. The part of the kernels that depends on shapes alone, torch-free and CUDA-free, so that
// csrc/tests/test_coupling.cpp walks a launch's passes on the host with the kernels' own arithmetic.
#pragma once

#include <cstdint>

#include "../coupling_layout.h"

namespace nf_kernels {
namespace cuda {

constexpr int64_t kMaxChunks = 4096;  // chunks of one sample: bounds the partials the second kernel adds

// Elements in a group: 16 bytes of x.
NF_HOST_DEVICE constexpr int group_elements(int x_size) { return 16 / x_size; }

// Groups a thread loads in one pass on the vector path (U): two, so that a pass has two independent 16-byte loads
// of x (grad_y) in flight and as many of s and t (and x in the backward); one when a group of h is 32 bytes or more
// (x 16-bit, h float or double), which is already 2 to 4 loads of s and as many of t.
NF_HOST_DEVICE constexpr int unroll_groups(int x_size, int h_size) {
  return group_elements(x_size) * h_size <= 16 ? 2 : 1;
}

// Whether the vector path moves h (and grad_h) as the team's 16-byte blocks (block_exchange.h): when a group of h
// is narrower than 16 bytes, 8 (float x with 16-bit h, double x with float h) or 4 (double x with 16-bit h).
NF_HOST_DEVICE constexpr bool h_in_blocks(int x_size, int h_size) { return group_elements(x_size) * h_size < 16; }

// Elements of a sample in one 16-byte block of h (h_in_blocks) and of the mask (one byte an element).
NF_HOST_DEVICE constexpr int h_block_elements(int h_size) { return 16 / h_size; }
constexpr int kMaskBlockElements = 16;

// Whether the sizes and offsets of a layout allow the vector path (the pointers must also be 16-byte aligned,
// which the launcher checks): whole groups, so that a group lies entirely inside or outside [lo, hi); when h moves
// in blocks, whole blocks of h, so that a block does too and a pass's h is at least one block; and for the mask
// pattern a sample of whole mask blocks (no block passes the mask's end). s_offset and channel pairs' pair_inner are
// whole units too.
inline bool vector_sizes(const FlatLayout& layout, int x_size, int h_size) {
  const int64_t unit = h_in_blocks(x_size, h_size) ? h_block_elements(h_size) : group_elements(x_size);
  if (layout.numel % unit || layout.lo % unit || layout.hi % unit || layout.h_stride % unit ||
      layout.t_offset % unit || layout.s_offset % unit || layout.pair_inner % unit)
    return false;
  // A compact h's positions are a table's: element by element. Channel pairs of whole units keep a unit (a group or
  // a block) inside one channel, whose parameters are then one run: base(p) moves by a constant a unit.
  if (layout.pattern == kPatternGather) return false;
  return layout.pattern != kPatternMask || layout.numel % kMaskBlockElements == 0;
}

// How a launch cuts the batch into work items, a function of the shapes alone: a team of T = 2^team_log2 lanes
// (at most a warp) owns a chunk of a sample, `rounds` passes of T * U groups; the items are the batch * chunks
// (sample, chunk) pairs.
struct Plan {
  int team_log2;
  int pass;        // elements of a pass, T * U * G (at most 32 * 2 * 8)
  int64_t rounds;  // passes a chunk (an int in the kernels' parameters: the launcher checks it fits)
  int64_t chunks;  // a sample
  int64_t items;   // batch * chunks
};

inline Plan make_plan(const FlatLayout& layout, int x_size, int h_size) {
  const int64_t group = group_elements(x_size);
  const int64_t unroll = unroll_groups(x_size, h_size);
  const int64_t groups = (layout.numel + group - 1) / group;
  Plan plan{5, 0, 1, 1, layout.batch};
  if (groups <= 32 * unroll) {  // one team of at most a warp a sample, one pass
    plan.team_log2 = 0;
    while ((int64_t(1) << plan.team_log2) * unroll < groups) ++plan.team_log2;
  } else {  // chunks of a warp, as few passes as keep the chunks below kMaxChunks
    const int64_t per_pass = 32 * unroll;
    plan.rounds = (groups + per_pass * kMaxChunks - 1) / (per_pass * kMaxChunks);
    plan.chunks = (groups + per_pass * plan.rounds - 1) / (per_pass * plan.rounds);
    plan.items = layout.batch * plan.chunks;
  }
  plan.pass = static_cast<int>((int64_t(1) << plan.team_log2) * unroll * group);
  return plan;
}

// Bits k < G of the elements n0 + k inside [begin, end).
template <int G>
NF_HOST_DEVICE uint32_t span_bits(int64_t n0, int64_t begin, int64_t end) {
  const int64_t from = begin - n0, to = end - n0;
  const int lo = from <= 0 ? 0 : (from >= G ? G : static_cast<int>(from));
  const int hi = to <= 0 ? 0 : (to >= G ? G : static_cast<int>(to));
  return ((1u << hi) - 1u) & ~((1u << lo) - 1u);
}

// One pass of a team: the sample's elements [start, start + size), size = T * U * G, of which the team may touch
// those below `end` (the sample's size, 0 for a team past the last item); this lane is `member` of `team`. Lane m
// takes group u * T + m of the pass in row u (consecutive lanes, consecutive 16 bytes of x), and block m of a
// tensor moved in blocks.
struct TeamPass {
  int64_t start, end;
  int team, member;
  int size;  // elements: at most 32 lanes * 2 groups * 8

  // The first element of this lane's group of row u.
  template <int G>
  NF_HOST_DEVICE int64_t group_start(int u) const {
    return start + static_cast<int64_t>(u * team + member) * G;
  }
  // The first element of this lane's block of a tensor of `per_block` elements a block, and whether the pass has
  // that block (lanes past the pass's blocks have none).
  NF_HOST_DEVICE int64_t block_start(int per_block) const { return start + static_cast<int64_t>(member) * per_block; }
  NF_HOST_DEVICE bool has_block(int per_block) const { return member * per_block < size; }
};

// Whether this lane's h block, from element n = block_start(per_block) on, is one to move: in the pass and inside
// [lo, hi). Blocks never straddle lo or hi, which are whole blocks (vector_sizes).
NF_HOST_DEVICE bool h_block_present(const FlatLayout& layout, const TeamPass& p, int per_block, int64_t n) {
  return p.has_block(per_block) && n < p.end && n >= layout.lo && n < layout.hi;
}

// Whether this lane's mask block, from element n = block_start(kMaskBlockElements) on, is one to read: in the pass
// and the sample (so inside the mask: the sample is whole blocks) and touching [lo, hi), where the selection is
// needed.
NF_HOST_DEVICE bool mask_block_present(const FlatLayout& layout, const TeamPass& p, int64_t n) {
  return p.has_block(kMaskBlockElements) && n < p.end && n < layout.hi && n + kMaskBlockElements > layout.lo;
}

}  // namespace cuda
}  // namespace nf_kernels
