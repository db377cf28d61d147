"""The device's copy bandwidth, measured in the same run as the ops: the ceiling of a memory-bound op's GB/s.

A large device-to-device copy (``dst.copy_(src)``) moves ``2 * nbytes`` (every byte read once and written
once); its rate is the best a memory-bound op can hope for. A case's floor is a time, its SPEC bytes over this
ceiling, and a fused op's GB/s divided by the ceiling (its floor over its time) is the share of it it reaches.
The buffers must be far larger than the last-level cache, or the copy measures the cache: 1 GiB on CUDA (the
H200's L2 is 60 MB); on the CPU 64 MiB, or twice the last-level cache where that is larger.
"""

from __future__ import annotations

from typing import Optional

import torch

from .cache import last_level_cache
from .timing import TimingBudget, median_seconds

DEFAULT_COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 26}


def default_copy_bytes(device: torch.device) -> int:
    """The size of the copied buffer on `device`: the default, and at least twice the last-level cache (source
    and destination together then hold four times the cache).

    >>> default_copy_bytes(torch.device("cpu")) >= 1 << 26
    True
    """
    return max(DEFAULT_COPY_BYTES.get(device.type, 1 << 26), 2 * last_level_cache(device).nbytes)


def copy_bandwidth(device: torch.device, nbytes: Optional[int] = None, budget: TimingBudget = TimingBudget()) -> float:
    """Bytes per second (read + write) of a large copy on `device`.

    >>> copy_bandwidth(torch.device("cpu"), nbytes=1 << 20, budget=TimingBudget(min_run_time_s=0.01)) > 0
    True
    """
    nbytes = nbytes or default_copy_bytes(device)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device, budget)
    return 2 * src.nbytes / seconds
