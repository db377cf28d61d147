"""Running the op benchmarks: every case, every provider, in one process, next to a copy-bandwidth measurement.

    >>> from nf_kernels.benchmarking.cases import op_cases
    >>> cases = list(op_cases([2**10], ["fp32"], ["affine"], ["forward"], ["half"]))
    >>> results = run_cases("cpu", cases, ["eager"], progress=False, budget=TimingBudget(min_run_time_s=0.01),
    ...                     copy_bytes=1 << 20)
    >>> results  # doctest: +ELLIPSIS
    [OpResult(affine forward half fp32 2^10, eager: ... ms, ... GB/s)]
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from .._arguments import logdet_dtype
from .byte_model import bytes_moved
from .cases import OpCase
from .machine import cache_reach, copy_bandwidth, last_level_cache
from .providers import COMPILE, EAGER, CouplingFn, available_providers, make_provider
from ..progress import progress_bar
from .timing import RateOfTimedCall, TimingBudget, measure


@dataclass
class OpResult(RateOfTimedCall):
    """One provider on one case. `seconds` is None when the provider failed; `error` then says why.

    With several rounds, `seconds` is the median round's time and `round_seconds` holds every round's.
    """

    case: OpCase
    provider: str
    seconds: Optional[float]
    bytes: int  # the SPEC byte count of the timed call (see byte_model)
    copy_bytes_per_s: float  # the device's copy bandwidth, measured in the same run: the ceiling of GB/s
    peak_bytes: Optional[int] = None  # CUDA only
    error: Optional[str] = None
    speedup_vs_eager: Optional[float] = None
    speedup_vs_compile: Optional[float] = None
    in_cache: bool = False  # the call's bytes fit in the last-level cache (see machine.py): no share of the ceiling
    round_seconds: tuple[float, ...] = ()  # the time of every round, in the order measured

    def to_dict(self) -> dict:
        row = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "case"}
        row.update(dataclasses.asdict(self.case), shape=list(self.case.shape), gbps=self.gbps)
        row.update(copy_fraction=self.copy_fraction, round_seconds=list(self.round_seconds), spread=self.spread,
                   min_seconds=min(self.round_seconds, default=self.seconds),
                   max_seconds=max(self.round_seconds, default=self.seconds))  # fmt: skip
        return row

    def __repr__(self) -> str:
        outcome = f"{self.seconds * 1e3:.4g} ms, {self.gbps:.4g} GB/s" if self.seconds else f"failed: {self.error}"
        return f"OpResult({self.case.label()}, {self.provider}: {outcome})"


def timed_call(fn: CouplingFn, case: OpCase, x: torch.Tensor, h: torch.Tensor) -> Callable[[], object]:
    """What is timed for `case`: one forward (or inverse) call, or a forward followed by its backward."""
    if not case.backward:
        return lambda: fn(x, h)
    generator = torch.Generator(device=x.device).manual_seed(1)
    grad_y = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    grad_logdet = torch.randn(x.shape[0], generator=generator, device=x.device, dtype=logdet_dtype(x.dtype))

    def forward_backward():
        y, logdet = fn(x, h)
        # The additive reference's logdet is a constant zero, outside the graph: differentiate what is in it.
        pairs = [(out, grad) for out, grad in ((y, grad_y), (logdet, grad_logdet)) if out.requires_grad]
        outputs, grads = zip(*pairs)
        return torch.autograd.grad(outputs, (x, h), grads, allow_unused=True)

    return forward_backward


def _measure(provider, case, x, h, device, budget, copy_rate, reach) -> OpResult:
    outcome = measure(lambda: timed_call(provider.coupling(case), case, x, h), device, budget)
    return OpResult(case, provider.name, outcome.seconds, bytes_moved(case), copy_rate, outcome.peak_bytes,
                    outcome.error, in_cache=bytes_moved(case) <= reach)  # fmt: skip


def median_round(attempts: Sequence[OpResult]) -> OpResult:
    """One provider's result over several rounds: the first failure if any, else the median round, carrying
    every round's time (its spread)."""
    failed = [r for r in attempts if r.seconds is None]
    if failed:
        return failed[0]
    ordered = sorted(attempts, key=lambda r: r.seconds)
    median = ordered[(len(ordered) - 1) // 2]
    return dataclasses.replace(median, round_seconds=tuple(r.seconds for r in attempts))


def add_speedups(results: Sequence[OpResult]) -> None:
    """Fill each result's speedup over the eager and compile results of the same case, where those exist."""
    times = {(r.case, r.provider): r.seconds for r in results if r.seconds}
    for r in results:
        if r.seconds:
            eager, compiled = times.get((r.case, EAGER)), times.get((r.case, COMPILE))
            r.speedup_vs_eager = eager / r.seconds if eager else None
            r.speedup_vs_compile = compiled / r.seconds if compiled else None


def run_cases(
    device: Union[str, torch.device],
    cases: Sequence[OpCase],
    providers: Optional[Sequence[str]] = None,
    progress: bool = True,
    *,
    compile_dynamic: bool = True,
    budget: TimingBudget = TimingBudget(),
    copy_bytes: Optional[int] = None,
    on_case: Optional[Callable[[list[OpResult]], None]] = None,
    time_limit_s: Optional[float] = None,
    rounds: int = 1,
) -> list[OpResult]:
    """Time `cases` with each provider, after measuring the copy bandwidth in the same process.

    `on_case` is called with all results so far after each case, so a caller can save partial results.
    With `time_limit_s`, no new case starts once that many seconds have passed: the cases not reached are left
    out (put the important ones first). With `rounds > 1` the providers of a case are measured in turn that many
    times and each keeps its median round (the lower middle one for an even count) and every round's time: on a
    shared machine, a burst of other work then hits every provider alike instead of whichever was being timed,
    and the spread between rounds shows how far to trust the figures.
    Cases whose bytes fit in the last-level cache (machine.py) are marked `in_cache`.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    start = time.monotonic()
    device = torch.device(device)
    names = available_providers(device, providers)
    instances = [make_provider(name, compile_dynamic=compile_dynamic) for name in names]
    # The best of a few copies: the yardstick is what memory can do, not what a busy moment allowed.
    copy_rate = max(copy_bandwidth(device, copy_bytes, budget) for _ in range(max(3, rounds)))
    reach = cache_reach(device.type, last_level_cache(device))
    bar = progress_bar(len(cases) * len(instances) * rounds, f"op benchmarks on {device.type}", progress)
    results: list[OpResult] = []
    for case in cases:
        if time_limit_s is not None and time.monotonic() - start > time_limit_s:
            break
        x, h = case.inputs(device)
        if case.backward:
            x.requires_grad_(True)
            h.requires_grad_(True)
        per_round = []
        for _ in range(rounds):
            per_round.append([])
            for provider in instances:
                bar.set_postfix_str(f"{case.label()} {provider.name}")
                per_round[-1].append(_measure(provider, case, x, h, device, budget, copy_rate, reach))
                bar.update()
        results += [median_round(attempts) for attempts in zip(*per_round)]
        del x, h
        add_speedups(results)
        if on_case is not None:
            on_case(results)
    bar.close()
    return results
