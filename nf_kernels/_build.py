"""Building and loading the C++/CUDA extension, ``nf_kernels._C`` (backends "cpu" and "cuda").

One place says what the extension is made of (sources, flags, CUDA targets); ``setup.py`` builds it from here
on ``pip install -e . --no-build-isolation``, and :func:`load` imports it at run time, turning every way it can
be missing into a sentence for ``nf_kernels.list_backends()`` instead of an import error.

    >>> from nf_kernels import _build
    >>> module, why_not = _build.load()
    >>> (module is None) == (why_not is not None)
    True

This file is also run by ``setup.py`` before the package exists, so it imports only the standard library at
module level.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
from types import ModuleType
from typing import Optional

MODULE = "nf_kernels._C"

# Compiled into every build. tile_kernels_{avx512,avx2,baseline}.cpp are the same kernels for three instruction
# sets (picked at load time), so a build for the machine it runs on is not needed.
CPU_SOURCES = [
    "csrc/python_module.cpp",
    "csrc/ops/schema.cpp",
    "csrc/ops/op_arguments.cpp",
    "csrc/ops/autograd.cpp",
    "csrc/ops/mlp.cpp",
    "csrc/ops/mlp_coupling.cpp",
    "csrc/cpu/ops_cpu.cpp",
    "csrc/cpu/tile_kernels_select.cpp",
    "csrc/cpu/tile_kernels_avx512.cpp",
    "csrc/cpu/tile_kernels_avx2.cpp",
    "csrc/cpu/tile_kernels_baseline.cpp",
    "csrc/ops/spline_arguments.cpp",
    "csrc/cpu/spline_ops_cpu.cpp",
    "csrc/cpu/spline_tiles_avx512.cpp",
    "csrc/cpu/spline_tiles_avx2.cpp",
    "csrc/cpu/spline_tiles_baseline.cpp",
]
# Added when torch has CUDA and nvcc is present. The .cu file is torch-free; ops_cuda.cpp is the torch glue.
CUDA_SOURCES = [
    "csrc/cuda/coupling_kernels.cu",
    "csrc/cuda/ops_cuda.cpp",
    "csrc/cuda/spline_kernels.cu",
    "csrc/cuda/spline_ops_cuda.cpp",
]

# torch's BuildExtension adds the C++ standard torch needs (C++20 for torch 2.13). -fno-math-errno lets sqrt and
# friends vectorize, nothing we read depends on errno or FP exception flags; no -ffast-math, which would break the
# NaN and Inf propagation the SPEC promises. -fopenmp: at::parallel_for is an inline OpenMP loop, compiled into the
# extension. -fno-wrapv undoes the -fwrapv of Python's own CFLAGS, which setuptools puts first: with int indices
# defined to wrap, GCC cannot prove `(bins + j) * kLanes + e` affine and left the spline backward's parameter
# gradients and the vectors' parameter staging scalar (the kernels never rely on signed wrap-around).
CXX_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-wrapv", "-fopenmp"]
LINK_FLAGS = ["-fopenmp"]
# -lineinfo: source lines for the SASS (profilers, and rule (a) of nf_kernels.benchmarking.gpu_code reading a built
# object); the machine code is the same without it.
NVCC_FLAGS = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
# GPU targets when TORCH_CUDA_ARCH_LIST is not set: A100 (sm_80) and H100 (sm_90).
DEFAULT_CUDA_ARCH_LIST = "8.0;9.0"

# Set to 1 (CI does) to make a failed extension build fail the install; by default the package installs
# without it and nf_kernels.list_backends() says why "cpu" is missing.
REQUIRE_ENV = "NF_KERNELS_REQUIRE_EXTENSION"


def why_no_cuda_build() -> Optional[str]:
    """None when the CUDA kernels can be compiled here, else why they are left out of the build."""
    import torch
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if cpp_extension.CUDA_HOME is None and shutil.which("nvcc") is None:
        return "nvcc was not found (set CUDA_HOME)"
    return None


def extension():
    """The setuptools Extension for nf_kernels._C: CPU kernels always, CUDA kernels when they can be built."""
    from torch.utils import cpp_extension

    required = os.environ.get(REQUIRE_ENV, "0") not in ("", "0")
    sources = list(CPU_SOURCES)  # relative to the project root, where setup.py runs
    if why_no_cuda_build() is None:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        return cpp_extension.CUDAExtension(
            MODULE,
            sources + CUDA_SOURCES,
            extra_compile_args={"cxx": CXX_FLAGS + ["-DNF_KERNELS_WITH_CUDA"], "nvcc": NVCC_FLAGS},
            extra_link_args=LINK_FLAGS,
            optional=not required,
        )
    return cpp_extension.CppExtension(
        MODULE, sources, extra_compile_args=CXX_FLAGS, extra_link_args=LINK_FLAGS, optional=not required
    )


@functools.lru_cache(maxsize=None)
def load() -> tuple[Optional[ModuleType], Optional[str]]:
    """(the loaded module, None), or (None, why it is unavailable and how to build it)."""
    try:
        return importlib.import_module(MODULE), None
    except ModuleNotFoundError:
        return None, (
            "the C++ extension nf_kernels._C is not built; build it with "
            "`pip install -e . --no-build-isolation` (or `python setup.py build_ext --inplace`)"
        )
    except (ImportError, OSError) as error:
        return None, (
            f"the C++ extension nf_kernels._C failed to load ({error}); it was probably built against another "
            "torch: rebuild it with `pip install -e . --no-build-isolation`"
        )
