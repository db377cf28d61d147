"""Model-level benchmarks: one training step (forward, backward, optimizer) of RealNVP and Glow built by
``nf_kernels.flows.build_model``, fused backends against the reference, standard against memory-saving mode.

Every model is built from the same seed, so the first step's loss must agree across backends; it is recorded
(``first_loss``) as a cheap check that the fast model computes the same thing as the slow one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch

from ..flows import build_model
from .providers import FUSED, make_provider
from ..progress import progress_bar
from .timing import TimingBudget, measure

# The models of nf_kernels.flows.MODELS whose training step is timed (--models chooses among these).
BENCHMARKED_MODELS = ("realnvp", "glow")
# Realistic sizes on a GPU (the 3x32x32 images, batch 64); small enough for 2 CPU cores.
DEFAULT_SHAPE = {"cuda": (3, 32, 32), "cpu": (3, 16, 16)}
DEFAULT_BATCH = {"cuda": 64, "cpu": 16}


@dataclass
class ModelResult:
    model: str
    backend: str
    memory_saving: bool
    batch: int
    sample_shape: tuple
    sizes: dict = dataclasses.field(default_factory=dict)  # build_model's size options; {} = its defaults
    seconds: Optional[float] = None  # median time of one training step
    peak_bytes: Optional[int] = None  # CUDA only: above parameters, optimizer state and the batch
    first_loss: Optional[float] = None
    error: Optional[str] = None
    speedup_vs_reference: Optional[float] = None  # against the reference backend in the same memory mode
    # Memory-saving results: the step's time over the standard step of the same model and backend (its price).
    time_vs_standard: Optional[float] = None

    @property
    def samples_per_s(self) -> Optional[float]:
        return self.batch / self.seconds if self.seconds else None

    def to_dict(self) -> dict:
        return dict(dataclasses.asdict(self), sample_shape=list(self.sample_shape), samples_per_s=self.samples_per_s)

    def __repr__(self) -> str:
        mode = "memory-saving" if self.memory_saving else "standard"
        outcome = f"{self.samples_per_s:.4g} samples/s" if self.seconds else f"failed: {self.error}"
        return f"ModelResult({self.model} {self.backend} {mode}: {outcome})"


def model_backends(device: torch.device) -> list[str]:
    """"reference" plus every fused backend that runs compiled code on `device` (not the Triton interpreter)."""
    return ["reference"] + [name for name in FUSED if make_provider(name).why_unavailable(device) is None]


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> Callable[[], float]:
    """A closure doing one maximum-likelihood step on the batch `x`; returns the loss (mean negative log-likelihood)."""

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = -model.log_prob(x).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _measure(result: ModelResult, device: torch.device, budget: TimingBudget) -> None:
    def make_step():
        torch.manual_seed(0)
        model = build_model(result.model, result.sample_shape, backend=result.backend,
                            memory_saving=result.memory_saving, **result.sizes).to(device)  # fmt: skip
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.rand(result.batch, *result.sample_shape, generator=torch.Generator().manual_seed(1)).to(device)
        step = training_step(model, optimizer, x)
        result.first_loss = float(step())  # also initializes data-dependent layers (ActNorm)
        return step

    outcome = measure(make_step, device, budget)
    result.seconds, result.peak_bytes, result.error = outcome.seconds, outcome.peak_bytes, outcome.error


def run_model_benchmarks(
    device: Union[str, torch.device],
    models: Sequence[str] = BENCHMARKED_MODELS,
    backends: Optional[Sequence[str]] = None,
    memory_saving: Sequence[bool] = (False, True),
    *,
    batch: Optional[int] = None,
    sample_shape: Optional[Sequence[int]] = None,
    sizes: Optional[dict] = None,
    progress: bool = True,
    budget: TimingBudget = TimingBudget(),
) -> list[ModelResult]:
    """Time a training step of each model with each backend (default: reference and the available fused ones).

    `sizes` are passed to ``build_model`` (for example ``{"hidden": 8, "num_steps": 1}``); default: its own.
    """
    device = torch.device(device)
    backends = list(backends or model_backends(device))
    batch = batch or DEFAULT_BATCH.get(device.type, 16)
    shape = tuple(sample_shape or DEFAULT_SHAPE.get(device.type, (3, 16, 16)))
    results = [
        ModelResult(model, backend, saving, batch, shape, dict(sizes or {}))
        for model in models for saving in memory_saving for backend in backends
    ]  # fmt: skip
    bar = progress_bar(len(results), f"model benchmarks on {device.type}", progress)
    for result in results:
        bar.set_postfix_str(f"{result.model} {result.backend}{' memory-saving' if result.memory_saving else ''}")
        _measure(result, device, budget)
        bar.update()
    bar.close()
    reference = {(r.model, r.memory_saving): r.seconds for r in results if r.backend == "reference" and r.seconds}
    standard = {(r.model, r.backend): r.seconds for r in results if not r.memory_saving and r.seconds}
    for r in results:
        base = reference.get((r.model, r.memory_saving))
        r.speedup_vs_reference = base / r.seconds if base and r.seconds else None
        base = standard.get((r.model, r.backend))
        r.time_vs_standard = r.seconds / base if r.memory_saving and base and r.seconds else None
    return results
