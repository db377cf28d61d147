"""NSF quality against the peers (issue 14): the same NSF trained in nf_kernels, nflows and zuko, then tested.

Each library's model of one :class:`~.peer_models.NSFSpec` (:func:`.training_step.nsf_spec` of the data's
dimension: 4 spline couplings, 8 bins on ``[-3, 3]``) is built from the same seed and trained with the same Adam,
learning rate, batches (``nf_kernels.training.BatchStream``: the same samples and dequantization noise at every
step, whatever the library) and number of steps. The test metric is what ``nf-kernels train`` reports
(``nf_kernels.training.objective.evaluate``): the NLL in nats per sample for continuous data (the 2-D toys), bits
per dimension for discrete data (the digits, a vector flow on their 64 pixels, dequantized into ``[0, 1)``).

The splines act on ``[-3, 3]``: a fixed affine map, the same for every library, takes the samples there first and
its log-determinant is added back (:class:`DataDensity`), so every figure is the density of the data itself.

Issue 14's goal: nf_kernels' test figure at least as good as each peer's, judged here within
:data:`QUALITY_TOLERANCE` (one seed; nf_kernels and nflows compute the same function from the same init, so what
tells them apart is float rounding amplified by training).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..data import FlowDataset
from ..progress import progress_bar
from ..training.batches import BatchStream
from ..training.distributed import DistributedContext
from ..training.objective import evaluate, loss_from_log_prob, metric_name
from .peer_models import NSF_LIBRARY_NOTES, NSF_PEERS, LibraryUnavailable, NSFSpec, build
from .report import format_number, markdown_table
from .training_step import LEARNING_RATE, nsf_spec

QUALITY_LIBRARIES = ("nf_kernels",) + NSF_PEERS
DEFAULT_TOYS = ("moons",)
DEFAULT_STEPS = {"toy": 1000, "digits": 500}
DEFAULT_BATCH = 256
QUALITY_TOLERANCE = 0.01  # nats per sample (toys) or bits per dimension (digits)
TAIL_FRACTION = 0.1  # the final training loss: the mean over this last fraction of the steps
# Digits dequantized into [0, 1) are moved to [-2, 2), inside the splines' [-3, 3]; the toys are there already.
DIGITS_SHIFT, DIGITS_SCALE = 0.5, 4.0


class DataDensity(nn.Module):
    """A flow over vectors as a density of a data set's samples: ``y = (x.flatten(1) - shift) * scale`` goes into
    `model`, and ``D log(scale)`` is added to its log-density (the map's log-determinant)."""

    def __init__(self, model: nn.Module, shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.model, self.shift, self.scale = model, float(shift), float(scale)

    def log_prob(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        y = (x.flatten(1) - self.shift) * self.scale
        return self.model.log_prob(y, context) + y.shape[1] * math.log(self.scale)


def data_map(data: FlowDataset) -> tuple[float, float]:
    """The fixed (shift, scale) of :class:`DataDensity` for `data`: the digits' into [-2, 2), none for the rest."""
    return (DIGITS_SHIFT, DIGITS_SCALE) if data.discrete else (0.0, 1.0)


@dataclass
class QualityResult:
    """One library's NSF trained on one data set: its test metric, its final training loss, its time."""

    library: str
    dataset: str
    spec: NSFSpec
    metric: str  # "nll" (nats per sample) or "bits_per_dim"
    steps: int
    batch: int
    seed: int
    test: Optional[float] = None
    train_tail: Optional[float] = None  # mean training loss over the last TAIL_FRACTION of the steps
    initial_test: Optional[float] = None  # the test metric at init (every library's is the same: the identity)
    seconds: Optional[float] = None  # training time, all steps
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), spec=dataclasses.asdict(self.spec))


def _train(result: QualityResult, data: FlowDataset, bar) -> None:
    torch.manual_seed(result.seed)
    try:
        model = DataDensity(build(result.library, result.spec), *data_map(data))
    except LibraryUnavailable as error:
        result.error = f"not installed: {error}"
        bar.update(result.steps)
        return
    result.initial_test = evaluate(model, data)
    stream = BatchStream(data, batch_size=result.batch, seed=result.seed, context=DistributedContext())
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    losses = []
    start = time.perf_counter()
    for step in range(result.steps):
        x, _ = stream.batch(step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_from_log_prob(model.log_prob(x), data)
        if not torch.isfinite(loss):
            result.error = f"the training loss is {loss.item()} at step {step}"
            bar.update(result.steps - step)
            return
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.update()
    result.seconds = time.perf_counter() - start
    result.train_tail = statistics.fmean(losses[-max(1, round(TAIL_FRACTION * len(losses))) :])
    result.test = evaluate(model, data)


def run_quality(
    datasets: Sequence[FlowDataset],
    libraries: Sequence[str] = QUALITY_LIBRARIES,
    *,
    steps: dict[str, int],
    batch: int = DEFAULT_BATCH,
    seed: int = 0,
    progress: bool = True,
) -> list[QualityResult]:
    """Train each library's NSF on each data set, one after another, and test it.

    Args:
        datasets: what to train on (``nf_kernels.data.load_dataset``): continuous vectors or digits.
        libraries: any of nf_kernels, nflows and zuko; one that is not installed gets an error, not a figure.
        steps: training steps by data kind, ``{"toy": ..., "digits": ...}`` (discrete data is "digits").
        batch: samples per step.
        seed: the models' seed (the same for every library) and the batches' order and noise.
        progress: show a progress bar.

    Returns:
        A :class:`QualityResult` per (data set, library), in that order.
    """
    unknown = [name for name in libraries if name not in QUALITY_LIBRARIES]
    if unknown:
        raise ValueError(f"unknown libraries {unknown}: valid choices are {', '.join(QUALITY_LIBRARIES)}")
    results = []
    for data in datasets:
        count = steps["digits" if data.discrete else "toy"]
        spec = nsf_spec(data.num_dims)
        results += [QualityResult(name, data.name, spec, metric_name(data), count, batch, seed) for name in libraries]
    bar = progress_bar(sum(r.steps for r in results), "NSF quality", progress)
    by_name = {data.name: data for data in datasets}
    for result in results:
        bar.set_postfix_str(f"{result.dataset} {result.library}")
        _train(result, by_name[result.dataset], bar)
    bar.close()
    return results


# ---- the report ---------------------------------------------------------------------------------------------

_UNITS = {"nll": "test NLL (nats)", "bits_per_dim": "test bits/dim"}


def verdict_lines(results: Sequence[QualityResult]) -> list[str]:
    """Issue 14's quality goal on each data set: nf_kernels' test figure against each peer's (lower is better)."""
    lines = []
    for dataset in dict.fromkeys(r.dataset for r in results):
        rows = {r.library: r for r in results if r.dataset == dataset}
        ours = rows.get("nf_kernels")
        if ours is None or ours.test is None:
            continue
        for peer in NSF_PEERS:
            theirs = rows.get(peer)
            if theirs is None or theirs.test is None:
                continue
            difference = ours.test - theirs.test
            verdict = "met" if difference <= QUALITY_TOLERANCE else "not met"
            lines.append(f"{dataset}: nf_kernels {ours.test:.4f} against {peer} {theirs.test:.4f} "
                         f"({_UNITS[ours.metric]}; difference {difference:+.4f}); goal: no worse, within "
                         f"{QUALITY_TOLERANCE:g}: {verdict}")  # fmt: skip
    return lines


def format_table(results: Sequence[QualityResult]) -> str:
    header = ["library", "test", "at init", "final train loss", "train s", "s/step"]
    rows = [[r.library, format_number(r.test, ".4f"), format_number(r.initial_test, ".4f"),
             format_number(r.train_tail, ".4f"), format_number(r.seconds, ".1f"),
             format_number(r.seconds / r.steps * 1e3 if r.seconds else None, ".2f") + (" ms" if r.seconds else "")]
            for r in results if r.error is None]  # fmt: skip
    return markdown_table(header, rows)


def format_report(env: dict, settings: dict, results: Sequence[QualityResult], command: str = "") -> str:
    parts = [
        f"# NSF quality against nflows and zuko: {env['device_name']}",
        "",
        f"- date: {env['date']}, commit `{env['commit']}` (on main `{env.get('base_commit') or 'unknown'}`)",
        f"- torch {env['torch']}, Python {env['python']}; "
        + ", ".join(f"{name} {version or 'not installed'}" for name, version in env["peers"].items()),
        f"- every library: the same NSF, seed {settings['seed']}, Adam (lr {LEARNING_RATE:g}), batch "
        f"{settings['batch']}, the same batches and dequantization noise; {env['threads']} thread(s); float32",
        "- test: the mean over the test split (20%, fixed) of the NLL in nats per sample (toys) or bits/dim "
        "(digits, dequantized with a fixed noise seed), as nf-kernels train reports; at init: before training "
        "(every library starts as the identity, so the same); final train loss: the mean over the last "
        f"{TAIL_FRACTION:.0%} of the steps; train s: the training loop alone, libraries one after another",
        f"- digits: a vector flow on the 64 pixels, moved from [0, 1) by (x - {DIGITS_SHIFT:g}) * {DIGITS_SCALE:g} "
        "into the splines' [-3, 3], the map's log-determinant added (the same for every library)",
    ]
    if command:
        parts.append(f"- command: `{command}`")
    lines = verdict_lines(results) or ["nothing to judge"]
    parts += ["", "## Goal (issue 14)", "", *(f"- {line}" for line in lines)]
    for dataset in dict.fromkeys(r.dataset for r in results):
        rows = [r for r in results if r.dataset == dataset]
        spec = rows[0].spec
        parts += ["", f"## {dataset}: {_UNITS[rows[0].metric]}, {rows[0].steps} steps; NSF D={spec.features}, "
                  f"{spec.description}", "", format_table(rows)]  # fmt: skip
    failed = [r for r in results if r.error]
    if failed:
        parts += ["", "## No figure", "", *(f"- {r.dataset} {r.library}: {r.error}" for r in failed)]
    libraries = list(dict.fromkeys(r.library for r in results))
    parts += ["", "## How each library builds the NSF", "", *(f"- {name}: {NSF_LIBRARY_NOTES[name]}" for name in libraries)]
    return "\n".join(parts) + "\n"


def report_paths(stem: Path) -> dict:
    """The run's files: ``<stem>-nsf-quality.md`` and ``.json``."""
    base = stem.with_name(stem.name + "-nsf-quality")
    return {"markdown": base.with_suffix(".md"), "json": base.with_suffix(".json")}


def write_json(path: Path, env: dict, settings: dict, results: Sequence[QualityResult], command: str = "") -> None:
    record = {"environment": env, "command": command, "settings": settings, "tolerance": QUALITY_TOLERANCE,
              "notes": NSF_LIBRARY_NOTES, "results": [r.to_dict() for r in results],
              "verdicts": verdict_lines(results)}  # fmt: skip
    Path(path).write_text(json.dumps(record, indent=1) + "\n")
