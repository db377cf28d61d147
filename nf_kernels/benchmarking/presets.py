"""Named benchmark plans: which op cases and models to time, and for how long, per device type; and
:func:`run_plan`, which runs one start to finish: the one entry point of ``benchmarks/run.py`` and
``nf-kernels bench``.

* ``quick``: a handful of cases at one size, seconds (what ``nf-kernels bench`` shows). On the CPU the size is
  2^23, the smallest whose cases are all beyond the reach of a 32 MiB L3 (machine.py), so its targets are judged.
* ``default``: on the CPU, the C++ extension issue's matrix (1M and 16M elements, fp32 and bf16, both masks,
  forward, inverse and forward+backward) plus the models; on CUDA, every case from 2^16 to 2^28 elements.
* ``gpu-suite``: the CUDA plan meant to fit the GPU suite's budget (an estimate of 2 to 4 minutes on an H200,
  compile times included; not yet run): the target-relevant cases first, every size, fewer dtype/mask
  combinations of the rest.
* ``tiny``: the smallest sizes, to exercise every code path on the CPU (tests and the suite's dry run).

Every plan also runs the op-layer overhead case (cases.OVERHEAD_SHAPES, overhead_runner.py) on the device's
extension backend, after the op cases: ``--what overhead`` runs it alone.

``quick`` and ``default`` measure three interleaved rounds, so every figure comes with its spread (report.py);
``gpu-suite`` and ``tiny`` one, to stay within their time budgets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from .cases import DIRECTIONS, DTYPES, MASKS, OPS, OpCase, OverheadCase, op_cases, overhead_cases
from .environment import environment, load_average
from .model_runner import BENCHMARKED_MODELS, ModelResult, run_model_benchmarks
from .op_runner import OpResult, run_cases
from .overhead_runner import OverheadResult, extension_backend, run_overhead
from .report import write_results
from .targets import TargetCheck, check_targets
from ..cpu_memory import keep_freed_cpu_memory
from .timing import TimingBudget


@dataclass(frozen=True)
class Preset:
    name: str
    cases: tuple[OpCase, ...]
    budget: TimingBudget
    models: tuple[str, ...] = BENCHMARKED_MODELS
    model_batch: Optional[int] = None  # None: the device's default (model_runner)
    model_shape: Optional[tuple[int, ...]] = None
    model_sizes: Optional[dict] = field(default=None, hash=False)  # build_model options; None: its defaults
    memory_saving: tuple[bool, ...] = (False, True)
    rounds: int = 1  # interleaved rounds of every op case (op_runner.run_cases) and overhead case
    overhead: tuple[OverheadCase, ...] = overhead_cases()  # the op-layer overhead case's shapes

    def __repr__(self) -> str:
        return f"Preset({self.name!r}, {len(self.cases)} op cases, models={list(self.models)})"


def _log2(*exponents: int) -> list[int]:
    return [2**e for e in exponents]


def _gpu_suite_cases() -> tuple[OpCase, ...]:
    """14 configurations x 7 sizes, most important first (a time limit cuts from the end). torch.compile's
    per-configuration compile time, not the timing, is what limits how many fit in the suite's budget."""
    sizes = _log2(16, 18, 20, 22, 24, 26, 28)
    both = ("forward", "forward+backward")
    groups = [("affine", d, "half", "bf16") for d in both] + [("affine", d, "half", "fp32") for d in both]
    groups += [("affine", d, "checkerboard", "bf16") for d in both] + [("affine", d, "half", "fp16") for d in both]
    groups += [("affine", "forward+backward", "checkerboard", "fp32"), ("affine", "inverse", "half", "bf16")]
    groups += [("additive", d, "half", "bf16") for d in both] + [("additive", "forward+backward", "half", "fp32")]
    groups += [("affine", "forward+backward", "checkerboard", "fp16")]
    return tuple(OpCase(*group, numel) for group in groups for numel in sizes)


def preset(name: str, device_type: str) -> Preset:
    """The plan called `name` for a device type ("cpu" or "cuda").

    >>> preset("quick", "cpu")
    Preset('quick', 4 op cases, models=[])
    """
    if name == "tiny":
        cases = op_cases(_log2(10, 12), ["fp32"], OPS, ["forward", "forward+backward"], MASKS)
        return Preset(name, tuple(cases), TimingBudget(warmup_ms=2, rep_ms=5, min_run_time_s=0.01),
                      models=("realnvp",), model_batch=4, model_shape=(3, 8, 8),
                      model_sizes={"hidden": 8, "num_steps": 1, "num_scales": 1})  # fmt: skip
    if name == "quick":
        if device_type == "cuda":
            cases = op_cases(_log2(24), ["bf16", "fp32"], ["affine"], ["forward", "forward+backward"], MASKS)
        else:  # 96 MiB and more: beyond twice a 32 MiB L3 (at 2^20, every case ran from the cache)
            cases = op_cases(_log2(23), ["fp32"], ["affine"], ["forward", "forward+backward"], MASKS)
        budget = TimingBudget(warmup_ms=10, rep_ms=30, min_run_time_s=0.1)
        return Preset(name, tuple(cases), budget, models=(), rounds=3)
    if name == "default":
        if device_type == "cuda":
            cases = op_cases(_log2(16, 18, 20, 22, 24, 26, 28), tuple(DTYPES), OPS, DIRECTIONS, MASKS)
            return Preset(name, tuple(cases), TimingBudget(), rounds=3)
        cases = op_cases(_log2(20, 24), ["fp32", "bf16"], ["affine"], DIRECTIONS, MASKS)
        return Preset(name, tuple(cases), TimingBudget(min_run_time_s=0.2), rounds=3)
    if name == "gpu-suite":
        if device_type != "cuda":  # the suite's dry run on a CPU: the same code paths, tiny sizes
            return preset("tiny", device_type)
        return Preset(name, _gpu_suite_cases(), TimingBudget(warmup_ms=5, rep_ms=25))
    raise ValueError(f"unknown preset {name!r}: valid choices are {', '.join(map(repr, PRESETS))}")


PRESETS = ("quick", "default", "gpu-suite", "tiny")

WHAT = ("all", "ops", "models", "overhead")  # what a run measures: "ops" are the op cases and the overhead case


@dataclass
class PlanRun:
    """Everything one run of a plan produced."""

    env: dict  # environment(), with the CPU allocator setting and the load average at the end
    op_results: list[OpResult]
    model_results: list[ModelResult]
    checks: list[TargetCheck]  # the targets, judged on both kinds of results
    written: list[Path]  # the result files, when the run was given a folder
    overhead_results: list[OverheadResult] = field(default_factory=list)


def run_plan(
    plan: Union[str, Preset],
    device: Union[str, torch.device],
    *,
    what: str = "all",
    cases: Optional[Sequence[OpCase]] = None,
    providers: Optional[Sequence[str]] = None,
    compile_dynamic: bool = True,
    time_limit_s: Optional[float] = None,
    rounds: Optional[int] = None,
    models: Optional[Sequence[str]] = None,
    model_batch: Optional[int] = None,
    progress: bool = True,
    keep_freed_memory: bool = True,
    out_dir: Optional[Path] = None,
    command: str = "",
    save_each_case: bool = False,
    on_start: Optional[Callable[[dict], None]] = None,
) -> PlanRun:
    """Run `plan` (a preset name, or the :class:`Preset` itself) on `device`, start to finish: the one path of
    ``benchmarks/run.py`` and ``nf-kernels bench``.

    1. On the CPU, freed memory is kept in the process (:func:`nf_kernels.keep_freed_cpu_memory`) unless
       `keep_freed_memory` is False; the environment says which.
    2. The environment is recorded and handed to `on_start`, before anything is measured.
    3. The op cases, then the op-layer overhead case, then the models, then the targets judged on op cases and
       models. `what` limits the run to the op cases and the overhead case ("ops"), the overhead case alone or
       the models; `cases`, `models` and `model_batch` replace the plan's choices (models run only if the plan
       has any); `providers`, `compile_dynamic`, `time_limit_s` and `rounds` (default: the plan's) go to
       :func:`~.op_runner.run_cases`; the overhead case runs when `providers` is not given or names the
       device's extension backend, with the same rounds.
    4. The load average at the end joins the environment (the warnings look at the load during the whole run).
    5. With `out_dir`, the results are written there (:func:`~.report.write_results`, recording `command`); with
       `save_each_case` also after every op case, without plots, so a run cut short keeps what it measured.
    """
    if what not in WHAT:
        raise ValueError(f"what must be one of {', '.join(map(repr, WHAT))}, got {what!r}")
    device = torch.device(device)
    plan = plan if isinstance(plan, Preset) else preset(plan, device.type)
    kept = device.type == "cpu" and keep_freed_memory and keep_freed_cpu_memory()
    env = dict(environment(device), cpu_malloc="freed memory kept (no mmap, no trim)" if kept else "system default")
    if on_start is not None:
        on_start(env)

    def save_partial(partial_ops: list[OpResult]) -> None:
        write_results(out_dir, env, partial_ops, [], check_targets(device.type, partial_ops), command, plots=False)

    op_results: list[OpResult] = []
    model_results: list[ModelResult] = []
    if what in ("all", "ops"):
        op_results = run_cases(
            device, plan.cases if cases is None else cases, providers, progress, compile_dynamic=compile_dynamic,
            budget=plan.budget, on_case=save_partial if out_dir is not None and save_each_case else None,
            time_limit_s=time_limit_s, rounds=plan.rounds if rounds is None else rounds,
        )  # fmt: skip
    overhead_results: list[OverheadResult] = []
    if what in ("all", "ops", "overhead") and plan.overhead and (
        providers is None or extension_backend(device) in providers
    ):
        overhead_results = run_overhead(device, plan.overhead, budget=plan.budget,
                                        rounds=plan.rounds if rounds is None else rounds, progress=progress)  # fmt: skip
    if what in ("all", "models") and plan.models:
        model_results = run_model_benchmarks(
            device, models or plan.models, memory_saving=plan.memory_saving, batch=model_batch or plan.model_batch,
            sample_shape=plan.model_shape, sizes=plan.model_sizes, progress=progress, budget=plan.budget,
        )  # fmt: skip
    checks = check_targets(device.type, op_results, model_results)
    env["load_average_1m_end"] = load_average()
    written = [] if out_dir is None else write_results(out_dir, env, op_results, model_results, checks, command,
                                                       overhead_results=overhead_results)  # fmt: skip
    return PlanRun(env, op_results, model_results, checks, written, overhead_results)
