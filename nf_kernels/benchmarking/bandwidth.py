"""The device's copy bandwidth, measured in the same run as the ops: the SPEC's yardstick for "the floor".

A large device-to-device copy (``dst.copy_(src)``) moves ``2 * nbytes`` (every byte read once and written
once); its rate is the best a memory-bound op can hope for, so a fused op's GB/s divided by it is the fraction
of the floor it reaches. The buffer is far larger than the last-level cache (1 GiB on CUDA, where the H200's L2
is 60 MB; 64 MiB on the CPU), so the copy measures memory, not cache.
"""

from __future__ import annotations

from typing import Optional

import torch

from .timing import TimingBudget, median_seconds

DEFAULT_COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 26}


def copy_bandwidth(device: torch.device, nbytes: Optional[int] = None, budget: TimingBudget = TimingBudget()) -> float:
    """Bytes per second (read + write) of a large copy on `device`.

    >>> copy_bandwidth(torch.device("cpu"), nbytes=1 << 20, budget=TimingBudget(min_run_time_s=0.01)) > 0
    True
    """
    nbytes = nbytes or DEFAULT_COPY_BYTES.get(device.type, 1 << 26)
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device, budget)
    return 2 * src.nbytes / seconds
