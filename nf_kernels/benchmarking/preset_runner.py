"""One benchmark plan, start to finish: its op cases, then its models, then the targets judged on both.

The common path of ``benchmarks/run.py`` and ``nf-kernels bench``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from .cases import OpCase
from .model_runner import ModelResult, run_model_benchmarks
from .op_runner import OpResult, run_cases
from .presets import Preset, preset
from .targets import TargetCheck, check_targets

WHAT = ("all", "ops", "models")


def run_preset(
    name: Union[str, Preset],
    device: Union[str, torch.device],
    *,
    progress: bool = True,
    time_limit_s: Optional[float] = None,
    rounds: Optional[int] = None,
    what: str = "all",
    cases: Optional[Sequence[OpCase]] = None,
    providers: Optional[Sequence[str]] = None,
    compile_dynamic: bool = True,
    on_case: Optional[Callable[[list[OpResult]], None]] = None,
    models: Optional[Sequence[str]] = None,
    model_batch: Optional[int] = None,
) -> tuple[list[OpResult], list[ModelResult], list[TargetCheck]]:
    """Run the plan `name` (a preset name, or the :class:`Preset` itself) on `device`.

    Returns ``(op_results, model_results, target_checks)``. `what` limits the run to the op cases or the models.
    `cases`, `models` and `model_batch` replace the plan's choices (models run only if the plan has any);
    `providers`, `compile_dynamic`, `on_case`, `time_limit_s` and `rounds` (default: the plan's) go to
    :func:`run_cases`.
    """
    if what not in WHAT:
        raise ValueError(f"what must be one of {', '.join(map(repr, WHAT))}, got {what!r}")
    device = torch.device(device)
    plan = name if isinstance(name, Preset) else preset(name, device.type)
    op_results: list[OpResult] = []
    model_results: list[ModelResult] = []
    if what in ("all", "ops"):
        op_results = run_cases(
            device, plan.cases if cases is None else cases, providers, progress, compile_dynamic=compile_dynamic,
            budget=plan.budget, on_case=on_case, time_limit_s=time_limit_s,
            rounds=plan.rounds if rounds is None else rounds,
        )  # fmt: skip
    if what in ("all", "models") and plan.models:
        model_results = run_model_benchmarks(
            device, models or plan.models, memory_saving=plan.memory_saving, batch=model_batch or plan.model_batch,
            sample_shape=plan.model_shape, sizes=plan.model_sizes, progress=progress, budget=plan.budget,
        )  # fmt: skip
    return op_results, model_results, check_targets(device.type, op_results, model_results)
