"""Training steps of the same RealNVP (or NSF) in nf_kernels and in the peer libraries, timed round-robin in one
process.

For each size, every library's model (:mod:`.peer_models`) is built from the same seed, checked, then timed in
turns: each round gives every model a few warm steps, then times `steps` steps of it (on the CPU one by one, the
round's figure their median); a model's time per step is the median over rounds of its per-step time. Because the models take turns within a round, a busy machine slows
them alike, so the ratio to the fastest peer (the peer of the smallest median time) is computed round by round (its
time in that round over the model's) and reported as its median with the range over rounds: on a shared machine the ratio is the figure
to trust, the absolute steps/s less so.

Before timing, every model must compute at init the log-prob that :func:`.peer_models.expected_init_log_prob`
predicts (the base density of its input for every library but nflows, whose scale map is not 1 at zero) and a
finite first loss; a model that fails either is reported and not timed. Memory: the bytes of autograd-saved
activations at their peak during one step (:func:`nf_kernels.flows.memory_report.activation_memory`, any device)
and, on CUDA, the peak allocated during one step above what was allocated before it.

The issue's goals (:data:`ISSUE_GOALS`) are judged on each size's median ratio; the NSF's (issue 14,
:data:`NSF_MEMORY_GOAL`) on its saved activations against nflows'.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from ..flows.memory_report import activation_memory
from ..progress import progress_bar
from ..training.optimizer import make_adam
from .model_runner import training_step
from .peer_models import (
    LIBRARIES,
    PEERS,
    LibraryUnavailable,
    ModelSpec,
    NSFSpec,
    RealNVPSpec,
    Unsupported,
    build,
    expected_init_log_prob,
    library_notes,
    sample_batch,
)
from .report import SPREAD_LIMIT, format_number, load_warning, markdown_table
from .timing import peak_bytes, synchronize

DEFAULT_SIZES = (2, 64, 4096)
DEFAULT_BATCH = 256
# The issue's goals: nf_kernels' step at least this many times as fast as the fastest peer's, by data size D.
ISSUE_GOALS = {2: 1.0, 64: 1.2, 4096: 1.5}
MEMORY_SAVING_GOAL = 1.35  # the memory-saving step at most this many times as slow as the standard one
LARGE_FEATURES = 1024  # from this D on, the issue's large model: 4 couplings, hidden 64
INIT_LOG_PROB_RTOL = 1e-5  # float32 sums of D terms; the check compares models, not rounding
LEARNING_RATE = 1e-3
# The optimizers a run may step with (--optimizer), each for every library: torch's Adam as it runs without options
# (the issue's configuration; on the CPU one parameter at a time), or Adam on torch's fused kernel, as nf-kernels
# train steps (nf_kernels/training/optimizer.py).
OPTIMIZERS: dict[str, Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]] = {
    "adam": lambda parameters: torch.optim.Adam(parameters, lr=LEARNING_RATE),
    "fused-adam": lambda parameters: make_adam(parameters, lr=LEARNING_RATE),
}
OPTIMIZER_DESCRIPTIONS = {"adam": "torch's Adam with its defaults", "fused-adam": "Adam on torch's fused kernel"}
MIB = 1 << 20
NSF_DEFAULT_SIZES = (8, 64)
NSF_WIDE_FEATURES = 64  # from this D on, the NSF's conditioners are 128 wide, below it 64
# Issue 14: the saved activations of nf_kernels' 4-coupling NSF step at most this fraction of nflows'.
NSF_MEMORY_GOAL = 0.25


def issue_spec(features: int) -> RealNVPSpec:
    """The issue's model for data of `features` dimensions: 8 couplings of hidden 128, or 4 of hidden 64 from
    `LARGE_FEATURES` on (its D=4096 case); 2 hidden layers either way.

    >>> issue_spec(64), issue_spec(4096).couplings
    (RealNVPSpec(features=64, couplings=8, hidden=128, depth=2), 4)
    """
    if features >= LARGE_FEATURES:
        return RealNVPSpec(features, couplings=4, hidden=64)
    return RealNVPSpec(features, couplings=8, hidden=128)


def nsf_spec(features: int) -> NSFSpec:
    """Issue 14's NSF for data of `features` dimensions: 4 spline couplings of 8 bins on [-3, 3], conditioners of
    2 hidden layers, 64 wide below `NSF_WIDE_FEATURES` and 128 from it on.

    >>> nsf_spec(8).hidden, nsf_spec(64).hidden
    (64, 128)
    """
    return NSFSpec(features, hidden=128 if features >= NSF_WIDE_FEATURES else 64)


def model_name(spec: ModelSpec) -> str:
    return "NSF" if isinstance(spec, NSFSpec) else "RealNVP"


@dataclass
class StepResult:
    """One library's training step at one size: every round's time per step, memory, the checks."""

    library: str
    spec: ModelSpec
    batch: int
    round_seconds: list = dataclasses.field(default_factory=list)  # time per step, one entry per round
    ratio_rounds: list = dataclasses.field(default_factory=list)  # the fastest peer's time over this one's, per round
    fastest_peer: Optional[str] = None  # the peer with the smallest median time at this size
    saved_bytes: Optional[int] = None  # peak of autograd-saved activations during one step
    peak_bytes: Optional[int] = None  # CUDA only: peak allocated during one step above what was there before
    first_loss: Optional[float] = None
    init_error: Optional[float] = None  # max |log_prob - expected| / max |expected| at init
    error: Optional[str] = None  # why it was not timed (not installed, unsupported, a failed check, an exception)

    @property
    def seconds(self) -> Optional[float]:
        return statistics.median(self.round_seconds) if self.round_seconds else None

    @property
    def steps_per_s(self) -> Optional[float]:
        return 1 / self.seconds if self.seconds else None

    @property
    def spread(self) -> Optional[float]:
        """Slowest round over fastest round; None with fewer than two rounds."""
        return max(self.round_seconds) / min(self.round_seconds) if len(self.round_seconds) > 1 else None

    @property
    def ratio(self) -> Optional[float]:
        """Median over rounds of the fastest peer's time over this model's: above 1, faster than the fastest peer."""
        return statistics.median(self.ratio_rounds) if self.ratio_rounds else None

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        record.update(spec=dict(dataclasses.asdict(self.spec), model=model_name(self.spec)), seconds=self.seconds, steps_per_s=self.steps_per_s,
                      spread=self.spread, ratio=self.ratio)  # fmt: skip
        return record


def peer_versions() -> dict:
    """The installed version of each peer library (None when it is missing)."""
    versions = {}
    for name in PEERS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class _Autocast:
    """`model` whose log-prob (the forward pass) runs under ``torch.autocast``; backward and the optimizer do not."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        self.model, self.device, self.dtype = model, device, dtype

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, self.dtype):
            return self.model.log_prob(x)


def _prepare(result: StepResult, device: torch.device, autocast: Optional[torch.dtype],
             optimizer_name: str = "adam") -> Optional[Callable]:  # fmt: skip
    """Build and check `result`'s model; return its training step, or None with `result.error` saying why not."""
    spec = result.spec
    try:
        torch.manual_seed(0)
        model = build(result.library, spec).to(device)
    except (LibraryUnavailable, Unsupported) as error:
        result.error = f"{'not installed' if isinstance(error, LibraryUnavailable) else 'unsupported'}: {error}"
        return None
    x = sample_batch(spec, result.batch, device)
    with torch.no_grad():
        log_prob, expected = model.log_prob(x), expected_init_log_prob(model, spec, x)
    result.init_error = float((log_prob - expected).abs().max() / expected.abs().max())
    if not result.init_error <= INIT_LOG_PROB_RTOL:
        result.error = (f"init check failed: log_prob differs from the expected {result.init_error:.2g} "
                        "(relative): the models do not compare")  # fmt: skip
        return None
    result.saved_bytes = activation_memory(model, x).peak
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    step = training_step(_Autocast(model, device, autocast) if autocast else model, optimizer, x)
    result.first_loss = float(step())
    if not math.isfinite(result.first_loss):
        result.error = f"first loss is {result.first_loss}"
        return None
    result.peak_bytes = peak_bytes(step, device)
    return step


def _seconds_per_step(step: Callable, device: torch.device, steps: int) -> float:
    """One round's time per step. CPU: the median of the steps timed one by one, so that a step another process
    interrupts does not become the round's figure. CUDA: the mean over the steps timed as one block, as a training
    loop runs them (queued without a synchronization between them)."""
    if device.type != "cuda":
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def _add_ratios(results: Sequence[StepResult]) -> None:
    """The fastest peer (the smallest median time) and, round by round, its time over each model's."""
    peers = [r for r in results if r.library in PEERS and r.round_seconds]
    if not peers:
        return
    fastest = min(peers, key=lambda r: r.seconds)
    for r in results:
        r.fastest_peer = fastest.library
        r.ratio_rounds = [fastest.round_seconds[i] / own for i, own in enumerate(r.round_seconds)]


def run_training_steps(
    specs: Sequence[ModelSpec],
    libraries: Sequence[str] = LIBRARIES,
    device="cpu",
    *,
    batch: int = DEFAULT_BATCH,
    steps: int = 10,
    warmup: int = 2,
    rounds: int = 5,
    autocast: Optional[torch.dtype] = None,
    optimizer: str = "adam",
    progress: bool = True,
    on_skip: Callable[[str], None] = print,
) -> list[StepResult]:
    """Time one training step (forward, backward, Adam) of each library's model of each spec, round-robin.

    Args:
        specs: the models' sizes, one per data size: :class:`RealNVPSpec` or :class:`NSFSpec`.
        libraries: which of `peer_models.LIBRARIES` to run; those not installed, or without the model
            (normflows and FrEIA have no NSF here), are skipped (a line to `on_skip`).
        device: where to run.
        batch: samples per step.
        steps: timed steps per model per round; `warmup` untimed steps come before them.
        rounds: how many times every model takes its turn.
        autocast: a dtype to run the forward passes under ``torch.autocast`` with (``torch.bfloat16``), or None.
        optimizer: a key of :data:`OPTIMIZERS`, the optimizer every model steps with.
        progress: show a progress bar.
        on_skip: called with one line for each model that is not timed.

    Returns:
        A :class:`StepResult` per (spec, library), in that order.
    """
    device = torch.device(device)
    unknown = [name for name in libraries if name not in LIBRARIES]
    if unknown:
        raise ValueError(f"unknown libraries {unknown}: valid choices are {', '.join(LIBRARIES)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: valid choices are {', '.join(OPTIMIZERS)}")
    for name, value, least in (("batch", batch, 1), ("steps", steps, 1), ("rounds", rounds, 1), ("warmup", warmup, 0)):
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
    everything: list[StepResult] = []
    bar = progress_bar(len(specs) * len(libraries) * (rounds + 1), f"training steps on {device.type}", progress)
    for spec in specs:
        results = [StepResult(name, spec, batch) for name in libraries]
        prepared = []
        for result in results:
            bar.set_postfix_str(f"{spec.label} {result.library}: build and check")
            step = _prepare(result, device, autocast, optimizer)
            if step is None:
                on_skip(f"{spec.label} {result.library}: {result.error}")
            else:
                prepared.append((result, step))
            bar.update()
        for _ in range(rounds):
            for result, step in prepared:
                bar.set_postfix_str(f"{spec.label} {result.library}")
                for _ in range(warmup):
                    step()
                result.round_seconds.append(_seconds_per_step(step, device, steps))
                bar.update()
        bar.update((rounds * (len(results) - len(prepared))))
        _add_ratios(results)
        everything += results
    bar.close()
    return everything


# ---- the report ---------------------------------------------------------------------------------------------


def _mib(nbytes: Optional[int]) -> str:
    return format_number(None if nbytes is None else nbytes / MIB)


def _ratio_cell(r: StepResult) -> str:
    if r.ratio is None:
        return "-"
    if len(r.ratio_rounds) == 1:
        return f"{r.ratio:.2f}"
    return f"{r.ratio:.2f} ({min(r.ratio_rounds):.2f}-{max(r.ratio_rounds):.2f})"


def format_size_table(results: Sequence[StepResult]) -> str:
    """A markdown table of one size's timed models, fastest first."""
    timed = sorted((r for r in results if r.seconds), key=lambda r: r.seconds)
    cuda = any(r.peak_bytes is not None for r in timed)  # the column only where there is something in it
    header = ["library", "ms/step", "steps/s", "spread", "x fastest peer (range)", "saved activations MiB"]
    header += ["CUDA peak MiB"] * cuda + ["first loss", "init log-prob rel. error"]
    rows = []
    for r in timed:
        row = [r.library, format_number(r.seconds * 1e3), format_number(r.steps_per_s, ".4g"),
               format_number(r.spread, ".2f"), _ratio_cell(r), _mib(r.saved_bytes)]  # fmt: skip
        row += [_mib(r.peak_bytes)] * cuda + [format_number(r.first_loss, ".6g"), format_number(r.init_error, ".1e")]
        rows.append(row)
    return markdown_table(header, rows)


def goal_lines(results: Sequence[StepResult]) -> list[str]:
    """The issue's goals, each judged on this run: nf_kernels against the fastest peer, memory-saving mode."""
    lines = []
    for r in results:
        if isinstance(r.spec, NSFSpec):
            continue  # nsf_goal_lines
        if r.library == "nf_kernels" and r.ratio is not None and r.spec.features in ISSUE_GOALS:
            goal = ISSUE_GOALS[r.spec.features]
            verdict = "met" if r.ratio >= goal else "not met"
            lines.append(f"{r.spec.label}: nf_kernels is {r.ratio:.2f}x the fastest peer ({r.fastest_peer}); goal "
                         f">= {goal:g}x: {verdict}")  # fmt: skip
    by_size = {(r.spec, r.library): r for r in results if not isinstance(r.spec, NSFSpec)}
    for (spec, library), r in by_size.items():
        standard = by_size.get((spec, "nf_kernels"))
        if library == "nf_kernels-memory-saving" and r.seconds and standard and standard.seconds:
            ratio = r.seconds / standard.seconds
            verdict = "met" if ratio <= MEMORY_SAVING_GOAL else "not met"
            lines.append(f"{spec.label}: the memory-saving step takes {ratio:.2f}x the standard one; goal "
                         f"<= {MEMORY_SAVING_GOAL:g}x: {verdict}")  # fmt: skip
    return lines + fused_node_lines(results) + nsf_goal_lines(results)


# The rows that each undo one of nf_kernels' autograd nodes, and what their time over nf_kernels' measures.
NODE_ROWS = (("nf_kernels-unfused-mlp", "the MLP's fused node"),
             ("nf_kernels-two-nodes", "the coupling layer's one node"))  # fmt: skip


def fused_node_lines(results: Sequence[StepResult]) -> list[str]:
    """What each of nf_kernels' fused nodes gains at each size (:data:`NODE_ROWS`): the row without it over
    nf_kernels, round by round (both run in every round), median and range; the issue sets no figure for it."""
    lines = []
    by_size = {(r.spec, r.library): r for r in results if not r.error}
    for spec in dict.fromkeys(spec for spec, _ in by_size):
        fused = by_size.get((spec, "nf_kernels"))
        for row, node in NODE_ROWS:
            without = by_size.get((spec, row))
            if not (fused and without and fused.round_seconds
                    and len(fused.round_seconds) == len(without.round_seconds)):  # fmt: skip
                continue
            ratios = [u / f for f, u in zip(fused.round_seconds, without.round_seconds)]
            lines.append(f"{spec.label}: {node} makes the step {statistics.median(ratios):.2f}x faster "
                         f"({min(ratios):.2f}-{max(ratios):.2f}; {row} over nf_kernels, round by round) "
                         "(no goal set)")  # fmt: skip
    return lines


def nsf_goal_lines(results: Sequence[StepResult]) -> list[str]:
    """Issue 14's memory goal for each NSF size: the saved activations of nf_kernels' step (standard,
    memory-saving and recomputing the conditioners) over nflows'; then the speed of each against the fastest peer,
    which the issue sets no figure for."""
    lines = []
    by_size = {(r.spec, r.library): r for r in results if isinstance(r.spec, NSFSpec) and not r.error}
    for spec in dict.fromkeys(spec for spec, _ in by_size):
        nflows = by_size.get((spec, "nflows"))
        for library in ("nf_kernels", "nf_kernels-memory-saving", "nf_kernels-recompute"):
            ours = by_size.get((spec, library))
            if ours and nflows and ours.saved_bytes and nflows.saved_bytes:
                fraction = ours.saved_bytes / nflows.saved_bytes
                verdict = "met" if fraction <= NSF_MEMORY_GOAL else "not met"
                lines.append(f"{spec.label} {library}: the step saves {_mib(ours.saved_bytes)} MiB of activations, "
                             f"{fraction:.3f} of nflows' {_mib(nflows.saved_bytes)} MiB; goal <= {NSF_MEMORY_GOAL:g}: "
                             f"{verdict}")  # fmt: skip
        for library in ("nf_kernels", "nf_kernels-memory-saving", "nf_kernels-recompute"):
            ours = by_size.get((spec, library))
            if ours and ours.ratio is not None:
                lines.append(f"{spec.label} {library}: the step is {ours.ratio:.2f}x the fastest peer "
                             f"({ours.fastest_peer}) (no goal set)")  # fmt: skip
    return lines


def warning_lines(env: dict, results: Sequence[StepResult]) -> list[str]:
    loads = (env.get("load_average_1m"), env.get("load_average_1m_end"))
    lines = [line for line in [load_warning(loads, env.get("cores"))] if line]
    noisy = [r for r in results if r.spread and r.spread > SPREAD_LIMIT]
    if noisy:
        worst = max(noisy, key=lambda r: r.spread)
        lines.append(f"{len(noisy)} timings varied by more than {SPREAD_LIMIT:g}x between rounds (worst: "
                     f"{worst.spec.label} {worst.library}, {worst.spread:.2f}x): trust the round-by-round ratios "
                     "more than the steps/s")  # fmt: skip
    return lines


def format_report(env: dict, settings: dict, results: Sequence[StepResult], command: str = "") -> str:
    """The markdown document of one run: settings, goals, a table per size, what was skipped, how models differ."""
    versions = ", ".join(f"{name} {version or 'not installed'}" for name, version in env["peers"].items())
    specs = list(dict.fromkeys(r.spec for r in results))
    models = " and ".join(dict.fromkeys(model_name(spec) for spec in specs)) or "RealNVP"
    issues = ", ".join(dict.fromkeys("14" if isinstance(spec, NSFSpec) else "12" for spec in specs)) or "12"
    parts = [
        f"# {models} training step against the peer libraries: {env['device_name']}",
        "",
        f"- date: {env['date']}, commit `{env['commit']}` (on main `{env.get('base_commit') or 'unknown'}`)",
        f"- torch {env['torch']}, Python {env['python']}; {versions}; nf_kernels' CPU kernels: "
        f"{env.get('cpu_kernels') or 'not built'}",
        f"- {settings['rounds']} rounds; per round and model {settings['warmup']} warm steps, then "
        f"{settings['steps']} timed steps; batch {settings['batch']}; {env['threads']} thread(s); autocast "
        f"{settings['autocast'] or 'off'}; "
        f"{OPTIMIZER_DESCRIPTIONS[settings.get('optimizer', 'adam')]} (lr {LEARNING_RATE:g}); float32",
        "- ms/step and steps/s: the median over rounds of each round's time per step (CPU: the median of its steps "
        "timed one by one; CUDA: their mean, timed as a block); spread: slowest round over fastest; x fastest peer: the "
        "fastest peer's (the peer of the smallest median) time over this model's, round by round, median (and range) "
        "over rounds: above 1 is faster",
        "- saved activations: the peak bytes of tensors autograd keeps for backward during one step "
        "(nf_kernels.flows.memory_report.activation_memory); on CUDA also the peak allocated during one step "
        "above what was allocated before it",
        "- init log-prob: every model at init against what its scale map predicts (the base density of x, "
        "except nflows' RealNVP: see below); a model that fails it is not timed",
    ]
    if command:
        parts.append(f"- command: `{command}`")
    if env["device"] == "cpu":
        kept = settings.get("freed_memory_kept")
        parts.append("- CPU allocator: " + ("freed memory kept in the process (nf_kernels.keep_freed_cpu_memory, as "
                                            "nf-kernels train does), for every model" if kept else
                                            "glibc's defaults (--system-malloc): steps page-fault big tensors in again"))
        parts.append(f"- 1-minute load average {format_number(env.get('load_average_1m'), '.2g')} at the start and "
                     f"{format_number(env.get('load_average_1m_end'), '.2g')} at the end on {env.get('cores')} cores")
    warnings = warning_lines(env, results)
    if warnings:
        parts += ["", "## Warnings", "", *(f"- warning: {line}" for line in warnings)]
    parts += ["", f"## Goals (issue {issues})", "", *(f"- {line}" for line in goal_lines(results) or ["nothing to judge"])]
    for spec in specs:
        rows = [r for r in results if r.spec == spec]
        parts += ["", f"## {model_name(spec)} {spec.label}: {spec.description}", "", format_size_table(rows)]
    skipped = [r for r in results if r.error]
    if skipped:
        parts += ["", "## Not timed", "", *(f"- {r.spec.label} {r.library}: {r.error}" for r in skipped)]
    for name, notes in _notes(specs).items():
        libraries = [library for library in dict.fromkeys(r.library for r in results) if library in notes]
        parts += ["", f"## How each library builds the {name}", ""]
        parts += [f"- {library}: {notes[library]}" for library in libraries]
    return "\n".join(parts) + "\n"


def _notes(specs: Sequence[ModelSpec]) -> dict[str, dict[str, str]]:
    """Each model kind among `specs` (RealNVP, NSF) and how every library builds it."""
    return {model_name(spec): library_notes(spec) for spec in specs}


def report_paths(stem: Path, what: str = "training-step") -> dict:
    """The run's files: ``<stem>-<what>.md``, ``.json`` and ``-<what>-profile.md``; `what` is
    ``"training-step"`` for the RealNVP, ``"nsf-step"`` for the NSF."""
    base = stem.with_name(f"{stem.name}-{what}")
    return {"markdown": base.with_suffix(".md"), "json": base.with_suffix(".json"),
            "profile": base.with_name(base.name + "-profile.md")}  # fmt: skip


def write_json(path: Path, env: dict, settings: dict, results: Sequence[StepResult], command: str = "",
               profile: Optional[list] = None) -> None:  # fmt: skip
    notes = _notes(list(dict.fromkeys(r.spec for r in results)))  # one kind: its notes; both: by kind
    record = {"environment": env, "command": command, "settings": settings,
              "notes": next(iter(notes.values())) if len(notes) == 1 else notes,
              "results": [r.to_dict() for r in results], "profile": profile}  # fmt: skip
    Path(path).write_text(json.dumps(record, indent=1) + "\n")

