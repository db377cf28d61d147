"""The speed targets of the benchmarks issue, checked against a run's results: met, missed, or not measured.

Each target is judged on its worst case ("at least 90% everywhere" means the smallest fraction counts), using
for every case the fastest fused backend, since that is the one ``backend="auto"`` picks. Cases that fit in the
last-level cache (``OpResult.in_cache``) are left out: they measure the cache, and the targets are about memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .op_runner import OpResult
from .providers import FUSED

LARGE = 2**26  # the H200 targets hold "at 2^26 elements and more"


@dataclass(frozen=True)
class OpTarget:
    description: str
    directions: tuple[str, ...]
    min_numel: int
    metric: str  # an OpResult attribute: copy_fraction, speedup_vs_compile or speedup_vs_eager
    threshold: float


@dataclass(frozen=True)
class ModelTarget:
    description: str
    model: str
    threshold: float  # fused samples/s over reference samples/s, standard (not memory-saving) mode


@dataclass
class TargetCheck:
    description: str
    threshold: float
    measured: Optional[float]  # the worst case's value; None when nothing was measured
    worst_case: str

    @property
    def met(self) -> Optional[bool]:
        return None if self.measured is None else self.measured >= self.threshold

    def __str__(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[self.met]
        value = "-" if self.measured is None else f"{self.measured:.3g}"
        return f"{verdict:<12} {self.description}: {value} (threshold {self.threshold:g}; worst: {self.worst_case})"


TARGETS = {
    "cuda": (
        OpTarget("fused forward, fraction of copy bandwidth, >= 2^26 elements", ("forward", "inverse"), LARGE,
                 "copy_fraction", 0.90),
        OpTarget("fused forward+backward, fraction of copy bandwidth, >= 2^26 elements", ("forward+backward",),
                 LARGE, "copy_fraction", 0.80),
        OpTarget("fused forward+backward speedup over torch.compile, >= 2^26 elements", ("forward+backward",),
                 LARGE, "speedup_vs_compile", 1.2),
        OpTarget("fused forward+backward speedup over eager, >= 2^26 elements", ("forward+backward",), LARGE,
                 "speedup_vs_eager", 3.0),
        ModelTarget("RealNVP training step, fused over reference", "realnvp", 1.3),
    ),
    # The C++ extension issue's goals for the 2-core CPU (1M and 16M elements).
    "cpu": (
        OpTarget("fused forward/inverse speedup over torch.compile, >= 2^20 elements", ("forward", "inverse"), 2**20,
                 "speedup_vs_compile", 1.0),
        OpTarget("fused forward+backward speedup over torch.compile, >= 2^20 elements", ("forward+backward",), 2**20,
                 "speedup_vs_compile", 1.0),
        OpTarget("fused forward/inverse speedup over eager, >= 2^20 elements", ("forward", "inverse"), 2**20,
                 "speedup_vs_eager", 5.0),
        OpTarget("fused forward+backward speedup over eager, >= 2^20 elements", ("forward+backward",), 2**20,
                 "speedup_vs_eager", 3.0),
        ModelTarget("RealNVP training step, fused over reference", "realnvp", 1.0),
    ),
}  # fmt: skip


def best_fused(results: Sequence[OpResult]) -> dict:
    """case -> the fastest successful fused result of that case."""
    best: dict = {}
    for r in results:
        if r.provider in FUSED and r.seconds and (r.case not in best or r.seconds < best[r.case].seconds):
            best[r.case] = r
    return best


def _check_op(target: OpTarget, best: dict) -> TargetCheck:
    in_range = [
        r for case, r in best.items()
        if case.direction in target.directions and case.numel >= target.min_numel and getattr(r, target.metric)
    ]  # fmt: skip
    values = [(getattr(r, target.metric), f"{r.case.label()} ({r.provider})") for r in in_range if not r.in_cache]
    if values:
        return TargetCheck(target.description, target.threshold, *min(values))
    why = f"all {len(in_range)} fused results in range fit in the cache" if in_range else "no fused result in range"
    return TargetCheck(target.description, target.threshold, None, why)


def _check_model(target: ModelTarget, model_results: Sequence) -> TargetCheck:
    values = [
        (r.speedup_vs_reference, f"{r.model} {r.backend}")
        for r in model_results
        if r.model == target.model and r.backend != "reference" and not r.memory_saving and r.speedup_vs_reference
    ]
    best = max(values) if values else None  # the fastest fused backend, as "auto" would pick
    return TargetCheck(target.description, target.threshold, *(best or (None, "not measured")))


def check_targets(device_type: str, op_results: Sequence[OpResult], model_results: Sequence = ()) -> list[TargetCheck]:
    """Every target for `device_type` ("cuda" or "cpu"), judged on these results."""
    best = best_fused(op_results)
    checks: list[TargetCheck] = []
    for target in TARGETS.get(device_type, ()):
        if isinstance(target, OpTarget):
            checks.append(_check_op(target, best))
        else:
            checks.append(_check_model(target, model_results))
    return checks
