"""Timing a callable the way each device wants it, and the peak memory of one call.

* CUDA: ``triton.testing.do_bench`` (CUDA events, L2 flushed before every run, warm-up first), the median.
* CPU: ``torch.utils.benchmark.Timer`` with all of torch's threads (its default is one thread, which would
  understate every parallel backend), the median of at least 7 blocks of calls. The op-layer overhead case takes
  the fastest block instead, on one thread, by that thread's CPU time (:func:`fastest_cpu_block_seconds`).

Peak memory is measured on CUDA only, as the bytes the call allocates above what was allocated before it
(outputs and temporaries included, inputs excluded). The CPU allocator keeps no such statistics, so CPU results
carry ``None`` ("n/a") rather than a number that would mean something else.

CPU timings should measure kernels rather than the operating system's page faults. With glibc's defaults a
benchmark loop page-faults (and the kernel zeroes) every large output on every call: at 2^24 float32 elements
that costs more than the op itself, and it hits every provider differently (eager allocates several
temporaries). On CUDA, PyTorch's caching allocator keeps freed blocks, so GPU timings never see this. Op
benchmarks therefore call :func:`nf_kernels.keep_freed_cpu_memory` (nf_kernels/cpu_memory.py says why and what
it costs), which makes glibc keep freed memory the same way.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

@dataclass(frozen=True)
class TimingBudget:
    """How long to measure one callable. The defaults suit a full run; tests and dry runs pass smaller ones."""

    warmup_ms: float = 25.0  # CUDA: warm-up time given to do_bench
    rep_ms: float = 100.0  # CUDA: measuring time given to do_bench
    min_run_time_s: float = 0.2  # CPU: the minimum measuring time (at least 7 blocks of calls)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], device: torch.device, budget: TimingBudget = TimingBudget()) -> float:
    """Median wall time of one call of `fn` on `device`, in seconds, after a warm-up call.

    >>> median_seconds(lambda: torch.ones(1000).sum(), torch.device("cpu"), TimingBudget(min_run_time_s=0.01)) < 1
    True
    """
    fn()  # first call: compiles, autotunes, allocates; never timed
    synchronize(device)
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=budget.warmup_ms, rep=budget.rep_ms, return_mode="median") / 1e3
    return _cpu_median(fn, budget.min_run_time_s)


def _cpu_median(fn: Callable[[], object], min_run_time_s: float, min_blocks: int = 7) -> float:
    """Median of several timed blocks of calls, each block long enough (~1 ms) to swamp the timer's overhead.

    `blocked_autorange` alone can end after a single block when the first call happens to stall (another process
    taking the core), and then reports that stall as the median; several blocks make the median robust. Calls
    slower than 50 ms get 3 blocks (single calls, the estimates included) to keep big sizes affordable.
    """
    times = _cpu_blocks(fn, min_run_time_s, min_blocks)
    return times[len(times) // 2]


def fastest_cpu_block_seconds(fn: Callable[[], object], budget: TimingBudget = TimingBudget()) -> float:
    """One call of `fn` on one thread, by that thread's CPU time: the fastest of the blocks of :func:`_cpu_median`.

    For differences of a few microseconds (the op-layer overhead case): other processes on a shared machine only
    ever add to a time, and wall time would count their turns on the core too. Everything the call does must run
    on the calling thread, which one torch thread ensures for the CPU kernels and the autograd engine.

    >>> fastest_cpu_block_seconds(lambda: torch.ones(1000).sum(), TimingBudget(min_run_time_s=0.01)) < 1
    True
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()  # first call: allocates; never timed
        return _cpu_blocks(fn, budget.min_run_time_s, clock=time.thread_time)[0]
    finally:
        torch.set_num_threads(threads)


def _cpu_blocks(fn: Callable[[], object], min_run_time_s: float, min_blocks: int = 7, clock=None) -> list[float]:
    """The per-call times of blocks of calls (see :func:`_cpu_median`), fastest first; `clock` replaces the wall
    clock."""
    from torch.utils import benchmark

    clock_option = {} if clock is None else {"timer": clock}
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), **clock_option)
    single_calls = sorted(timer.timeit(1).median for _ in range(3))
    per_call = single_calls[0]
    if per_call > 0.05:
        return single_calls[1:2]
    number = max(1, int(1e-3 / max(per_call, 1e-9)))
    blocks = min(1000, max(min_blocks, int(min_run_time_s / (number * per_call))))
    return sorted(timer.timeit(number).median for _ in range(blocks))


def peak_bytes(fn: Callable[[], object], device: torch.device) -> Optional[int]:
    """Bytes allocated by one call of `fn` at its peak, above what was allocated before; None off CUDA."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


class RateOfTimedCall:
    """What a benchmark row derives from its time and byte count (`seconds`, `bytes`, `copy_bytes_per_s`,
    `round_seconds`, fields of the dataclass that mixes this in): GB/s, the share of the copy bandwidth and the
    spread of the rounds."""

    seconds: Optional[float]
    bytes: int
    copy_bytes_per_s: float
    round_seconds: tuple[float, ...]

    @property
    def gbps(self) -> Optional[float]:
        return self.bytes / self.seconds / 1e9 if self.seconds else None

    @property
    def copy_fraction(self) -> Optional[float]:
        """Achieved bytes per second over the copy's (the call's floor time over its time): 1.0 reaches the
        ceiling. Measured in every case; only out-of-cache cases make it a claim about memory."""
        return self.bytes / self.seconds / self.copy_bytes_per_s if self.seconds else None

    @property
    def spread(self) -> Optional[float]:
        """The slowest round's time over the fastest one's; None with fewer than two rounds."""
        return max(self.round_seconds) / min(self.round_seconds) if len(self.round_seconds) > 1 else None


@dataclass(frozen=True)
class Measurement:
    seconds: Optional[float]  # median time of one call; None when it failed
    peak_bytes: Optional[int]  # CUDA only
    error: Optional[str]  # "ErrorType: first line of the message" when it failed


def measure(make_call: Callable[[], Callable[[], object]], device: torch.device, budget: TimingBudget) -> Measurement:
    """Build a call with `make_call`, then time it and take its peak memory. A failure anywhere (out of memory, a
    compile error, a kernel error) is returned as `error` rather than raised, so one bad case never ends a run."""
    try:
        call = make_call()
        seconds = median_seconds(call, device, budget)
        return Measurement(seconds, peak_bytes(call, device), None)
    except Exception as error:
        if device.type == "cuda":
            torch.cuda.empty_cache()  # after an out-of-memory error, give the next case a clean pool
        return Measurement(None, None, describe_error(error))


def describe_error(error: BaseException) -> str:
    """"ErrorType: first line of the message": what a results table says of a call that failed. An error without
    a message (a bare ``assert``) names the line that raised it instead.

    >>> describe_error(ValueError("bad size\\nmore detail"))
    'ValueError: bad size'
    """
    first_line = (str(error).strip().splitlines() or [""])[0]
    if not first_line and error.__traceback__ is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        first_line = f"at {Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}: {frame.line}"
    return f"{type(error).__name__}: {first_line}"
