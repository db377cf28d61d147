"""Keeping freed CPU memory in the process, as PyTorch's CUDA caching allocator does on GPUs.

PyTorch's CPU tensors come from glibc's malloc. glibc serves big blocks (from 128 KiB, a threshold it raises up
to 32 MiB as it goes) with fresh ``mmap`` pages and unmaps them on free, and it trims the top of the heap back to
the operating system whenever more than twice that threshold lies free there. A training step allocates and frees
the same multi-megabyte activations and gradients every step, so each step page-faults them in again, and the
kernel zeroes every page: at 1 thread, the forward of one coupling of a ``[256, 4096]`` RealNVP (its conditioner's
last layer and the fused op) took 5.1 ms with glibc's defaults and 2.3 ms with freed memory kept, the sum of its
parts (``benchmarks/results``: the training-step benchmark reports both settings).

:func:`keep_freed_cpu_memory` asks glibc to keep what it frees: no ``mmap`` for big blocks and no trimming, so
after the first step every allocation reuses memory already mapped. The cost is that the process keeps its peak
heap size until it exits (what the CUDA caching allocator does with GPU memory). It changes the whole process
from the call on, so the library never calls it on import: ``nf-kernels train`` and the benchmarks call it on the
CPU, and your own training loop can too. Equivalent without code: ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment, or an allocator such as jemalloc or tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_cpu_memory() -> bool:
    """Make glibc malloc keep freed memory in the process from now on; False where that is not possible
    (a C library other than glibc, or one without ``mallopt``).

    >>> import nf_kernels
    >>> nf_kernels.keep_freed_cpu_memory()  # doctest: +SKIP
    True
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
