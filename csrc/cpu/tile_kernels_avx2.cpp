// The CPU tile kernels compiled for AVX2 with FMA (8 floats a vector); see tile_kernels_impl.h.
#include "isa_target.h"

#if NF_X86_TARGETS
NF_TARGET_BEGIN("avx2,fma")
#define NF_ISA_NAME avx2
#define NF_ISA_STRING "avx2"
#include "tile_kernels_impl.h"
NF_TARGET_END()
const nf_kernels::cpu::TileKernels* nf_kernels::cpu::avx2_tile_kernels() { return &avx2::kTileKernels; }
#else
const nf_kernels::cpu::TileKernels* nf_kernels::cpu::avx2_tile_kernels() { return nullptr; }
#endif
