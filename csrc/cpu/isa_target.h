// Compiling a region of a translation unit for a given x86 instruction set (GCC and Clang), so one build carries
// AVX-512, AVX2 and baseline copies of the CPU kernels and picks one at run time (tile_kernels_select.cpp).
// Include the system headers the region needs *before* NF_TARGET_BEGIN: inline functions they define keep the
// baseline target and can be shared safely with other translation units.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "tile_kernels.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define NF_X86_TARGETS 1
#define NF_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define NF_TARGET_BEGIN(features) NF_PRAGMA(clang attribute push(__attribute__((target(features))), apply_to = function))
#define NF_TARGET_END() NF_PRAGMA(clang attribute pop)
#else
#define NF_TARGET_BEGIN(features) NF_PRAGMA(GCC push_options) NF_PRAGMA(GCC target(features))
#define NF_TARGET_END() NF_PRAGMA(GCC pop_options)
#endif
#else
#define NF_X86_TARGETS 0
#endif
