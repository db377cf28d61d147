"""Making CPU timings measure kernels rather than the operating system's page faults.

PyTorch's CPU tensors come from glibc's malloc, which serves blocks above 32 MiB with fresh ``mmap`` pages and
returns them on free. A benchmark loop therefore page-faults (and the kernel zeroes) every large output on every
call: at 2^24 float32 elements that cost more than the op itself, and it hits every provider differently (eager
allocates several temporaries). On CUDA, PyTorch's caching allocator keeps freed blocks, so GPU timings never see
this. :func:`keep_freed_cpu_memory` asks glibc to do the same: no ``mmap`` for big blocks, no trimming of the heap,
so after the warm-up call every allocation reuses memory already mapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_cpu_memory() -> bool:
    """Configure glibc malloc to keep freed memory in the process; False where that is not possible (not glibc).

    It affects the whole process from then on, which is what a benchmark process wants and a library user may
    not: call it from benchmark entry points only.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
