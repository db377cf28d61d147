// The CPU spline tile kernels compiled for AVX-512 (16 floats a vector); see spline_tiles_impl.h.
#include <new>
#include <type_traits>
#include <vector>

#include "isa_target.h"
#include "spline_tiles.h"

#if NF_X86_TARGETS
NF_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,prefer-vector-width=512")
#define NF_ISA_NAME avx512
#define NF_ISA_STRING "avx512"
#include "spline_tiles_impl.h"
NF_TARGET_END()
const nf_kernels::cpu::SplineTileKernels* nf_kernels::cpu::avx512_spline_tile_kernels() {
  return &avx512::kSplineTileKernels;
}
#else
const nf_kernels::cpu::SplineTileKernels* nf_kernels::cpu::avx512_spline_tile_kernels() { return nullptr; }
#endif
