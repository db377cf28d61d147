// The CPU tile kernels compiled for AVX-512 (16 floats a vector); see tile_kernels_impl.h.
#include "isa_target.h"

#if NF_X86_TARGETS
NF_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")
#define NF_ISA_NAME avx512
#define NF_ISA_STRING "avx512"
#include "tile_kernels_impl.h"
NF_TARGET_END()
const nf_kernels::cpu::TileKernels* nf_kernels::cpu::avx512_tile_kernels() { return &avx512::kTileKernels; }
#else
const nf_kernels::cpu::TileKernels* nf_kernels::cpu::avx512_tile_kernels() { return nullptr; }
#endif
