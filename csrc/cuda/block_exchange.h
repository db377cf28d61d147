// How a team of the CUDA kernels moves a tensor narrower than x in 16-byte accesses: the index arithmetic of the
// exchange, torch-free and CUDA-free, so that csrc/tests/test_coupling.cpp can emulate a team on the host.
//
// A pass of a team of T lanes covers T * U consecutive groups of G elements (16 bytes of x), group g = u * T + m in
// lane m: consecutive lanes take consecutive groups, so each 16-byte load of x is one coalesced warp access. A tensor
// whose group is kBytes < 16 bytes (h when it is narrower than x, the one-byte-an-element mask) would need a narrow
// access per group. Instead the pass's groups of such a tensor are one contiguous region of T * U * kBytes bytes,
// read and written as 16-byte blocks, block j (bytes [16 j, 16 j + 16) of the region) by lane j, and the lanes
// exchange words: group g is kBytes / 4 words of lane lane_of(g)'s block from word word_of(g) on. Bytes move as
// often as before, in fewer and wider instructions; the shuffles run in registers.
//
// The functions take the exchange as a callable, so the kernel passes warp shuffles and the test array reads:
//   group_from_blocks: fetch(q, lane) = word q of the block of team lane `lane`;
//   block_from_groups: fetch(u, k, lane) = word k of group row u (group u * T + lane) of team lane `lane`;
//   group_mask_bits:   fetch(lane) = nonzero_bytes of the mask block of team lane `lane`.
// Every lane of the team must call them together (shuffles need the whole warp).
#pragma once

#include <cstdint>

#include "../coupling_layout.h"

#if defined(__CUDA_ARCH__)
#define NF_UNROLL _Pragma("unroll")
#else
#define NF_UNROLL
#endif

namespace nf_kernels {
namespace cuda {

// The raw bits of a group of one tensor (or of a 16-byte block), as 32-bit words in registers.
template <int kBytes>
struct Words {
  static_assert(kBytes % 4 == 0 && kBytes >= 4, "groups are whole 32-bit words");
  uint32_t w[kBytes / 4];
};

// Blocks in the region of a pass, T * U groups of kBytes: at least one whenever the region is 16 bytes or more,
// which the vector path's size checks guarantee; lanes from this one on have no block.
NF_HOST_DEVICE int blocks_in_pass(int team, int unroll, int group_bytes) { return team * unroll * group_bytes / 16; }

// w[q] for a q known only at run time, by selects (an indexed register array would go to local memory).
NF_HOST_DEVICE uint32_t word_at(const uint32_t (&w)[4], int q) {
  return q == 0 ? w[0] : q == 1 ? w[1] : q == 2 ? w[2] : w[3];
}

// The team lane whose block holds group g, and the word of that block the group starts at.
NF_HOST_DEVICE int block_lane_of(int g, int group_bytes) { return (g * group_bytes) >> 4; }
NF_HOST_DEVICE int block_word_of(int g, int group_bytes) { return ((g * group_bytes) & 15) >> 2; }

// Group g of a tensor of kBytes (4 or 8) a group, from the team's blocks.
template <int kBytes, class Fetch>
NF_HOST_DEVICE Words<kBytes> group_from_blocks(int g, Fetch&& fetch) {
  static_assert(kBytes == 4 || kBytes == 8, "a group narrower than a block, of whole words");
  const int lane = block_lane_of(g, kBytes), first = block_word_of(g, kBytes);
  uint32_t w[4];
  NF_UNROLL
  for (int q = 0; q < 4; ++q) w[q] = fetch(q, lane);  // all four: which ones this lane needs varies by lane
  Words<kBytes> out;
  NF_UNROLL
  for (int k = 0; k < kBytes / 4; ++k) out.w[k] = word_at(w, first + k);
  return out;
}

// Block j of the team's region (lane j stores it), from the groups of a pass of `team` lanes and U rows. Word q of
// the block is word k of group g = j * (16 / kBytes) + q / (kBytes / 4), which lane g % team holds in row g / team.
template <int kBytes, int U, class Fetch>
NF_HOST_DEVICE Words<16> block_from_groups(int j, int team, Fetch&& fetch) {
  static_assert(kBytes == 4 || kBytes == 8, "a group narrower than a block, of whole words");
  constexpr int kWords = kBytes / 4;
  Words<16> out;
  NF_UNROLL
  for (int q = 0; q < 4; ++q) {
    const int g = j * (16 / kBytes) + q / kWords, lane = g & (team - 1), row = g / team;
    uint32_t v = 0;
    NF_UNROLL
    for (int u = 0; u < U; ++u) {  // every row: the one this lane needs varies by lane
      const uint32_t word = fetch(u, q % kWords, lane);
      if (row == u) v = word;
    }
    out.w[q] = v;
  }
  return out;
}

// Bits 0..15 of a 16-byte mask block: bit k set where byte k is nonzero. Per word, a byte's high bit is set in
// ((b & 0x7f) + 0x7f) | b exactly when b != 0 (no carry crosses bytes); multiplying the four high bits, moved to
// bits 0, 8, 16, 24, by 0x01020408 gathers them in bits 24..27 without overlapping partial products.
NF_HOST_DEVICE uint32_t nonzero_bytes(const Words<16>& block) {
  uint32_t bits = 0;
  NF_UNROLL
  for (int q = 0; q < 4; ++q) {
    const uint32_t w = block.w[q];
    const uint32_t high = ((((w & 0x7f7f7f7fu) + 0x7f7f7f7fu) | w) & 0x80808080u) >> 7;
    bits |= (((high * 0x01020408u) >> 24) & 0xfu) << (4 * q);
  }
  return bits;
}

// The G selection bits of group g (one mask byte an element) from the team's mask blocks.
template <int G, class Fetch>
NF_HOST_DEVICE uint32_t group_mask_bits(int g, Fetch&& fetch) {
  static_assert(G == 2 || G == 4 || G == 8, "groups are 16 bytes of x");
  const int byte = g * G;
  return (fetch(byte >> 4) >> (byte & 15)) & ((1u << G) - 1u);
}

}  // namespace cuda
}  // namespace nf_kernels
