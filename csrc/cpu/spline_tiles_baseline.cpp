// The CPU spline tile kernels for the compiler's default target, which every CPU of the platform runs; see
// spline_tiles_impl.h. Also where the glue's variant is chosen: the affine kernels' instruction set.
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#include "isa_target.h"
#include "spline_tiles.h"

#define NF_ISA_NAME baseline
#define NF_ISA_STRING "baseline"
#include "spline_tiles_impl.h"

const nf_kernels::cpu::SplineTileKernels* nf_kernels::cpu::baseline_spline_tile_kernels() {
  return &baseline::kSplineTileKernels;
}

const nf_kernels::cpu::SplineTileKernels& nf_kernels::cpu::selected_spline_tile_kernels() {
  static const SplineTileKernels& kernels = [] () -> const SplineTileKernels& {
    const char* isa = selected_tile_kernels().isa;
    for (const SplineTileKernels* variant : {avx512_spline_tile_kernels(), avx2_spline_tile_kernels()})
      if (variant != nullptr && std::strcmp(variant->isa, isa) == 0) return *variant;
    return *baseline_spline_tile_kernels();
  }();
  return kernels;
}
