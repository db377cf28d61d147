"""What the device's memory can do: its copy bandwidth, the ceiling of a memory-bound op's GB/s, and its
last-level cache, within whose reach that ceiling does not hold.

**Copy bandwidth**, measured in the same run as the ops. A large device-to-device copy (``dst.copy_(src)``) moves
``2 * nbytes`` (every byte read once and written once); its rate is the best a memory-bound op can hope for. A
case's floor is a time, its SPEC bytes over this ceiling, and a fused op's GB/s divided by the ceiling (its floor
over its time) is the share of it it reaches. The buffers must be far larger than the last-level cache, or the
copy measures the cache: 1 GiB on CUDA (the H200's L2 is 60 MB); on the CPU 64 MiB, or twice the last-level cache
where that is larger.

**Last-level cache.** A call whose data stay in cache between timed calls is not limited by memory: its GB/s can
exceed the copy bandwidth, so "% of ceiling" would claim more than 100% of what memory allows. Such rows are
marked "in cache" and left out of share-of-ceiling claims and the speed targets. The size comes from:

* CPU: the highest-level cache of CPU 0 in Linux's sysfs (the one CPU 0 shares with its neighbours: an L3 slice
  on most machines); 32 MiB, a common L3 size, where sysfs says nothing (macOS, Windows, some containers).
* CUDA: the L2 cache from ``torch.cuda.get_device_properties``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .timing import TimingBudget, median_seconds

FALLBACK_BYTES = 32 << 20
SYSFS_CPU0_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DEFAULT_COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 26}


@dataclass(frozen=True)
class CacheSize:
    nbytes: int
    source: str  # where the size came from, for the report

    def __str__(self) -> str:
        return f"{self.nbytes / (1 << 20):.3g} MiB, {self.source}"


def _sysfs_size(text: str) -> int:
    """Bytes of a sysfs cache size such as "32768K"."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"unreadable cache size {text!r}")
    return int(match[1]) * _UNITS[match[2].upper()]


def cpu_last_level_cache(sysfs: Path = SYSFS_CPU0_CACHE) -> CacheSize:
    """The largest data (or unified) cache at the highest level under `sysfs`; the fallback when none is readable.

    >>> cpu_last_level_cache(Path("/nonexistent"))
    CacheSize(nbytes=33554432, source='fallback: no cache sizes in /nonexistent')
    """
    found = []
    for index in sorted(Path(sysfs).glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            found.append((level, _sysfs_size((index / "size").read_text()), index.name))
        except (OSError, ValueError):
            continue  # an entry this kernel does not fill in: the other levels still count
    if not found:
        return CacheSize(FALLBACK_BYTES, f"fallback: no cache sizes in {sysfs}")
    level, nbytes, name = max(found)
    return CacheSize(nbytes, f"L{level} in {sysfs / name}")


def last_level_cache(device: torch.device) -> CacheSize:
    """The last-level cache of `device`: the CPU's highest-level cache, or a CUDA device's L2."""
    if device.type == "cuda":
        nbytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
        if nbytes > 0:
            return CacheSize(nbytes, "L2 from torch.cuda.get_device_properties")
        return CacheSize(FALLBACK_BYTES, "fallback: torch reports no L2 size")
    return cpu_last_level_cache()


def cache_reach(device_type: str, cache: CacheSize) -> int:
    """The largest SPEC byte count of a timed call that still runs (partly) from cache.

    On the CPU that is twice the cache: nothing flushes it between the timed calls, the byte count counts tensors
    that forward+backward reads twice, and a stream slightly larger than the cache still finds part of itself in
    it (an affine forward+backward of 2^20 fp32 elements, 32 MiB and a little more of SPEC bytes, ran at 108% of
    the copy bandwidth on a machine with a 32 MiB L3). On CUDA, ``triton.testing.do_bench`` flushes the L2
    before every timed call, so only what one call reuses can hit: the L2 itself.

    >>> cache_reach("cpu", CacheSize(32 << 20, "test")) == 64 << 20
    True
    """
    return cache.nbytes if device_type == "cuda" else 2 * cache.nbytes


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
