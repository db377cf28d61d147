// The CPU tile kernels for the compiler's default target (SSE2 on x86-64, NEON on arm64), which every CPU of
// the platform runs; see tile_kernels_impl.h.
#include "isa_target.h"

#define NF_ISA_NAME baseline
#define NF_ISA_STRING "baseline"
#include "tile_kernels_impl.h"

const nf_kernels::cpu::TileKernels* nf_kernels::cpu::baseline_tile_kernels() { return &baseline::kTileKernels; }
