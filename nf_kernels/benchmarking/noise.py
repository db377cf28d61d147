"""Warnings about timings that cannot be trusted: rounds that disagree, and a machine busy with other work.

On a shared machine the same benchmark was seen to differ by up to 10x from one run to the next. Two signs give
it away in the run itself: the interleaved rounds of a case disagree (op_runner.run_cases keeps every round's
time), or the 1-minute load average exceeds the number of cores, so other processes compete for them.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .op_runner import OpResult

SPREAD_LIMIT = 1.5  # slowest round over fastest round, beyond which a figure is noise rather than a measurement


def spread_warning(results: Sequence[OpResult], limit: float = SPREAD_LIMIT) -> Optional[str]:
    """One line naming how many timings varied by more than `limit` between rounds, and the worst; None if none.

    >>> from nf_kernels.benchmarking.cases import OpCase
    >>> case = OpCase("affine", "forward", "half", "fp32", 2**10)
    >>> print(spread_warning([OpResult(case, "eager", 1e-3, 1, 1.0, round_seconds=(1e-3, 2e-3, 1e-3))]))
    ... # doctest: +ELLIPSIS
    timings varied by more than 1.5x between rounds in 1 of 1 measurements (worst: affine ... eager, 1 to 2 ms, 2.0x)...
    """
    measured = [r for r in results if r.spread is not None]
    noisy = [r for r in measured if r.spread > limit]
    if not noisy:
        return None
    worst = max(noisy, key=lambda r: r.spread)
    fastest, slowest = min(worst.round_seconds) * 1e3, max(worst.round_seconds) * 1e3
    return (f"timings varied by more than {limit:g}x between rounds in {len(noisy)} of {len(measured)} measurements "
            f"(worst: {worst.case.label()} {worst.provider}, {fastest:.3g} to {slowest:.3g} ms, {worst.spread:.1f}x): "
            "the machine was busy; rerun it quieter or with more --rounds")  # fmt: skip


def load_warning(load_averages: Sequence[Optional[float]], cores: Optional[int]) -> Optional[str]:
    """One line when the highest of the 1-minute load averages (taken at the start and the end of a run, say)
    exceeds the core count; None otherwise or when either is unknown.

    >>> load_warning([1.2, 3.5], 2)  # doctest: +ELLIPSIS
    'the 1-minute load average reached 3.5 on 2 cores: other processes competed with the timed code, ...'
    """
    known = [load for load in load_averages if load is not None]
    if not known or not cores or max(known) <= cores:
        return None
    return (f"the 1-minute load average reached {max(known):.2g} on {cores} cores: other processes competed with "
            "the timed code, so times may be slow and noisy")


def timing_warnings(env: dict, op_results: Sequence[OpResult]) -> list[str]:
    """Every warning for a run described by `env` (environment(), plus ``load_average_1m_end`` once it ended)."""
    loads = (env.get("load_average_1m"), env.get("load_average_1m_end"))
    found = (spread_warning(op_results), load_warning(loads, env.get("cores")))
    return [warning for warning in found if warning]
