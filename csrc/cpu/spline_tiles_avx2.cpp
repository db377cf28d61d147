// The CPU spline tile kernels compiled for AVX2 with FMA (8 floats a vector); see spline_tiles_impl.h.
#include <new>
#include <type_traits>
#include <vector>

#include "isa_target.h"
#include "spline_tiles.h"

#if NF_X86_TARGETS
NF_TARGET_BEGIN("avx2,fma")
#define NF_ISA_NAME avx2
#define NF_ISA_STRING "avx2"
#include "spline_tiles_impl.h"
NF_TARGET_END()
const nf_kernels::cpu::SplineTileKernels* nf_kernels::cpu::avx2_spline_tile_kernels() {
  return &avx2::kSplineTileKernels;
}
#else
const nf_kernels::cpu::SplineTileKernels* nf_kernels::cpu::avx2_spline_tile_kernels() { return nullptr; }
#endif
