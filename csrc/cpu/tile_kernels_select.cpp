// Picks the CPU kernels' instruction set once: the best this CPU supports, optionally capped by the
// NF_KERNELS_CPU_ISA environment variable (baseline, avx2 or avx512), which tests use to check each variant.
#include <cstdlib>
#include <cstring>

#include "tile_kernels.h"

namespace nf_kernels {
namespace cpu {
namespace {

bool cpu_runs_avx512() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_runs_avx2() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const TileKernels& choose() {
  const char* cap = std::getenv("NF_KERNELS_CPU_ISA");
  const bool allow_avx512 = cap == nullptr || std::strcmp(cap, "avx512") == 0 || cap[0] == '\0';
  const bool allow_avx2 = allow_avx512 || std::strcmp(cap, "avx2") == 0;
  if (allow_avx512 && avx512_tile_kernels() != nullptr && cpu_runs_avx512()) return *avx512_tile_kernels();
  if (allow_avx2 && avx2_tile_kernels() != nullptr && cpu_runs_avx2()) return *avx2_tile_kernels();
  return *baseline_tile_kernels();
}

}  // namespace

const TileKernels& selected_tile_kernels() {
  static const TileKernels& kernels = choose();
  return kernels;
}

}  // namespace cpu
}  // namespace nf_kernels
