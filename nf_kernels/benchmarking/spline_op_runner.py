"""Running the spline op benchmark: nf_kernels' fused ``cpu`` spline and its ``reference``, nflows' and zuko's
splines eager and under ``torch.compile``, timed round-robin on the same inputs next to the copy bandwidth.

Every implementation of a case is warmed up first (twice: the first call compiles), then each takes one timed
block of calls in turn, `rounds` times; a result is its median block (per call) and keeps every block's time.
A burst of other work on a shared machine then hits every implementation alike. A failure (an implementation
that is not installed, a compile error, a dtype it refuses) becomes that result's `error` rather than ending the
run.

    >>> from nf_kernels.benchmarking.spline_cases import spline_op_cases
    >>> cases = list(spline_op_cases(2**8, [4], ["fp32"], ["forward"], features=8))
    >>> run_spline_cases(cases, ["cpu", "reference"], rounds=1, block_s=0.001, copy_bytes=1 << 20,
    ...                  progress=False)  # doctest: +ELLIPSIS
    [SplineOpResult(spline forward fp32 K=4 2^8, cpu: ...), SplineOpResult(spline forward fp32 K=4 2^8, reference: ...)]
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from ..progress import progress_bar
from .byte_model import spline_bytes_moved
from .machine import cache_reach, copy_bandwidth, last_level_cache
from .spline_cases import BOUND, SplineOpCase
from .spline_peers import PEER_SPLINES, SplineFn
from .timing import RateOfTimedCall, TimingBudget, describe_error

FUSED = "cpu"
COMPILED = " compile"  # the suffix of a peer's torch.compile column
IMPLEMENTATIONS = ("cpu", "reference", "nflows", "nflows compile", "zuko", "zuko compile")
CPU = torch.device("cpu")


@dataclass
class SplineOpResult(RateOfTimedCall):
    """One implementation on one case. `seconds` is None when it failed; `error` then says why."""

    case: SplineOpCase
    implementation: str
    seconds: Optional[float]  # the median round's time of one call
    bytes: int  # the byte model's count of the timed call (byte_model.spline_bytes_moved)
    copy_bytes_per_s: float  # the copy bandwidth measured in the same run: the ceiling of GB/s
    error: Optional[str] = None
    round_seconds: tuple[float, ...] = ()  # every round's time of one call, in the order measured
    in_cache: bool = False  # the call's bytes fit in the last-level cache (machine.py): no share of the ceiling
    fused_speedup: Optional[float] = None  # this implementation's time over the fused cpu op's, same case

    def to_dict(self) -> dict:
        row = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "case"}
        row.update(dataclasses.asdict(self.case), shape=list(self.case.shape), gbps=self.gbps,
                   copy_fraction=self.copy_fraction, spread=self.spread, round_seconds=list(self.round_seconds))  # fmt: skip
        return row

    def __repr__(self) -> str:
        outcome = f"{self.seconds * 1e3:.4g} ms, {self.gbps:.4g} GB/s" if self.seconds else f"failed: {self.error}"
        return f"SplineOpResult({self.case.label()}, {self.implementation}: {outcome})"


def allow_recompiles() -> None:
    """Every case is a new guard set on the peers' code objects; past dynamo's recompile limit (8 by default) a
    compiled column would silently run eager and measure the wrong thing (providers.CompiledReference does the
    same)."""
    dynamo_config = torch._dynamo.config
    for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(dynamo_config, limit):
            setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), 4096))


def _fused(x: torch.Tensor, params: torch.Tensor, case: SplineOpCase, backend: str):
    import nf_kernels

    return nf_kernels.spline_coupling(x, params, bins=case.bins, bound=BOUND, reverse=case.reverse, backend=backend)


def spline_fn(implementation: str, case: SplineOpCase, compile_backend: str = "inductor") -> SplineFn:
    """The function `implementation` computes for `case`, of the op's (x, params) for nf_kernels and of the
    peers' (transformed x [B, D], params [B, D, P])."""
    if implementation in ("cpu", "reference"):
        return functools.partial(_fused, case=case, backend=implementation)
    peer, compiled = implementation.removesuffix(COMPILED), implementation.endswith(COMPILED)
    if peer not in PEER_SPLINES:
        raise ValueError(f"unknown implementation {implementation!r}: valid choices are {IMPLEMENTATIONS}")
    fn = functools.partial(PEER_SPLINES[peer], bins=case.bins, inverse=case.reverse)
    return torch.compile(fn, dynamic=False, backend=compile_backend) if compiled else fn


def peer_inputs(case: SplineOpCase, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The peers' view of the op's inputs: the transformed half of x (its own tensor, as a coupling layer's
    indexing makes it) and params as [B, D, P] (a view)."""
    return x[:, case.features :].contiguous(), params.view(case.batch, case.features, case.per_element)


def timed_call(fn: SplineFn, case: SplineOpCase, x: torch.Tensor, params: torch.Tensor) -> Callable[[], object]:
    """What is timed: one call without autograd, or a forward with the loss sum(y) + sum(logdet) and its
    backward to x and params."""
    if not case.backward:

        def call():
            with torch.no_grad():
                return fn(x, params)

        return call
    x, params = x.detach().requires_grad_(True), params.detach().requires_grad_(True)

    def forward_backward():
        y, logdet = fn(x, params)
        return torch.autograd.grad(y.sum() + logdet.sum(), (x, params))

    return forward_backward


def _block_seconds(call: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


def time_round_robin(
    calls: dict[str, Callable[[], object]], rounds: int, block_s: float
) -> dict[str, tuple[tuple[float, ...], Optional[str]]]:
    """Per name: every round's time of one call and None, or () and the error of a call that failed.

    >>> times = time_round_robin({"sum": lambda: sum(range(100)), "bad": lambda: 1 / 0}, rounds=3, block_s=1e-3)
    >>> len(times["sum"][0]), times["bad"]
    (3, ((), 'ZeroDivisionError: division by zero'))
    """
    numbers, outcome = {}, {}
    for name, call in calls.items():
        try:
            call()  # compiles, allocates; never timed
            single = _block_seconds(call, 1)
            numbers[name] = max(1, int(block_s / max(single, 1e-9)))  # a block long enough to swamp the timer
        except Exception as error:
            outcome[name] = ((), describe_error(error))
    times: dict[str, list[float]] = {name: [] for name in numbers}
    for _ in range(rounds):
        for name in list(times):
            try:
                times[name].append(_block_seconds(calls[name], numbers[name]))
            except Exception as error:
                outcome[name] = ((), describe_error(error))
                del times[name]
    outcome.update({name: (tuple(t), None) for name, t in times.items()})
    return {name: outcome[name] for name in calls}


def _calls(case: SplineOpCase, implementations: Sequence[str], x: torch.Tensor, params: torch.Tensor,
           compile_backend: str) -> dict[str, Callable[[], object]]:  # fmt: skip
    peer_x, peer_params = peer_inputs(case, x, params)
    calls = {}
    for name in implementations:
        ours = name in ("cpu", "reference")
        try:
            fn = spline_fn(name, case, compile_backend)
        except Exception as error:  # a peer that is not installed
            calls[name] = functools.partial(_raise, error)
            continue
        calls[name] = timed_call(fn, case, x, params) if ours else timed_call(fn, case, peer_x, peer_params)
    return calls


def _raise(error: Exception) -> None:
    raise error


def add_fused_speedups(results: Sequence[SplineOpResult]) -> None:
    """Fill each result's time over the fused cpu op's time in the same case."""
    fused = {r.case: r.seconds for r in results if r.implementation == FUSED and r.seconds}
    for r in results:
        if r.seconds and r.case in fused:
            r.fused_speedup = r.seconds / fused[r.case]


def run_spline_cases(
    cases: Sequence[SplineOpCase],
    implementations: Sequence[str] = IMPLEMENTATIONS,
    *,
    rounds: int = 5,
    block_s: float = 0.05,
    copy_bytes: Optional[int] = None,
    compile_backend: str = "inductor",
    progress: bool = True,
    on_case: Optional[Callable[[list[SplineOpResult]], None]] = None,
) -> list[SplineOpResult]:
    """Time every case with every implementation on the CPU, after measuring the copy bandwidth (the best of
    three copies: the yardstick is what memory can do, not what a busy moment allowed)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    allow_recompiles()
    budget = TimingBudget(min_run_time_s=min(0.2, 20 * block_s))
    copy_rate = max(copy_bandwidth(CPU, copy_bytes, budget) for _ in range(3))
    reach = cache_reach("cpu", last_level_cache(CPU))
    bar = progress_bar(len(cases), "spline op benchmark", progress)
    results: list[SplineOpResult] = []
    inputs: dict = {}
    for case in cases:
        bar.set_postfix_str(case.label())
        if case.group not in inputs:
            inputs = {case.group: case.inputs()}  # one set of inputs for every direction of a (bins, dtype)
        calls = _calls(case, implementations, *inputs[case.group], compile_backend)
        for name, (seconds, error) in time_round_robin(calls, rounds, block_s).items():
            nbytes = spline_bytes_moved(case, kept_half=name in ("cpu", "reference"))
            results.append(SplineOpResult(case, name, statistics.median(seconds) if seconds else None, nbytes,
                                          copy_rate, error, seconds, nbytes <= reach))  # fmt: skip
        add_fused_speedups(results)
        bar.update()
        if on_case is not None:
            on_case(results)
    bar.close()
    return results
