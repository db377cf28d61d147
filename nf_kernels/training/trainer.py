"""The training loop: Adam, warm-up + cosine LR, gradient clipping, optional bf16 autocast, DDP, checkpoints.

Everything that decides a step's outcome (the batch, its dequantization noise, the model, optimizer and scheduler
states) is either a function of the step number or saved in the checkpoint, so ``resume`` continues bitwise on
the same trajectory, and a run under torchrun matches a single process with the same global batch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..data import FlowDataset
from ..errors import UserError
from ..progress import progress_bar
from .batches import BatchStream
from .checkpoint import CheckpointError, capture_rng, load_checkpoint, restore_rng, save_atomically
from .distributed import DistributedContext
from .files import remove_partial_files
from .metrics import MetricsLog
from .objective import LogProb, evaluate, loss_from_log_prob, metric_name
from .optimizer import make_adam
from .precision import PRECISIONS
from .schedule import make_scheduler


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite; the message suggests what to change."""


class TrainConfigError(UserError, ValueError):
    """A :class:`TrainConfig` with values that cannot work; the message lists every one of them."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (the model and the data are given separately). ``batch_size`` is the global batch.

    >>> TrainConfig(steps=100).total_steps(steps_per_epoch=10)
    100
    >>> TrainConfig(steps=None, epochs=3).total_steps(steps_per_epoch=10)
    30
    """

    steps: Optional[int] = 1000
    epochs: Optional[int] = None  # used when steps is None
    batch_size: int = 256  # across all processes: results do not depend on how many there are
    lr: float = 1e-3
    warmup_steps: int = 100
    final_lr_ratio: float = 0.01  # the cosine decays to lr * final_lr_ratio
    weight_decay: float = 0.0
    clip_grad: float = 5.0  # max global gradient norm; 0 disables clipping
    dtype: str = "fp32"  # "bf16": autocast of the forward pass; "fp64": float64 weights and data
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500  # 0: only at the end
    checkpoint_every: int = 500  # 0: only at the end
    eval_batch_size: int = 1024
    conditional: bool = False  # pass the labels as context (class-conditional models)
    progress: bool = True

    def __post_init__(self) -> None:
        problems = []
        for name in ("batch_size", "log_every", "eval_batch_size"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "weight_decay", "clip_grad", "final_lr_ratio"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)}")
        if self.steps is None and self.epochs is None:
            problems.append("give either steps or epochs")
        for name in ("steps", "epochs"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if self.dtype not in PRECISIONS:
            problems.append(f"dtype must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}")
        if problems:
            raise TrainConfigError("; ".join(problems))

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a finished run reports. ``steps_per_s`` counts training steps only (not evaluation or checkpoints)."""

    step: int
    metric: str  # "bits_per_dim" or "nll"
    train_loss: float
    test_metric: float
    steps_per_s: float
    checkpoint: Optional[Path]
    metrics: Optional[Path]


class Trainer:
    """Trains ``flow`` (anything with ``log_prob(x, context)``) on ``data``; outputs go to ``out_dir``.

    ``checkpoint_extra`` is saved in every checkpoint as is (the CLI stores how to rebuild the model and the
    data there). Only rank 0 writes files. Nothing here stops two trainers from sharing ``out_dir``: the caller
    owns the directory (``nf-kernels train`` holds a lock on it for the whole run).
    """

    def __init__(
        self,
        flow: nn.Module,
        data: FlowDataset,
        config: TrainConfig,
        *,
        out_dir: Path,
        context: DistributedContext = DistributedContext(),
        checkpoint_extra: Optional[dict[str, Any]] = None,
    ) -> None:
        self.data, self.config, self.context = data, config, context
        self.precision = PRECISIONS[config.dtype]
        self.flow = flow.to(context.device, self.precision.parameters)
        self.stream = BatchStream(data, batch_size=config.batch_size, seed=config.seed, context=context,
                                  conditional=config.conditional, dtype=self.precision.parameters)  # fmt: skip
        self.total_steps = config.total_steps(self.stream.steps_per_epoch)
        self.optimizer = make_adam(self.flow.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, warmup_steps=config.warmup_steps,
                                        total_steps=self.total_steps, final_ratio=config.final_lr_ratio)  # fmt: skip
        self.out_dir = Path(out_dir)
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.metric = metric_name(data)
        self.step = 0

    def __repr__(self) -> str:
        return (f"Trainer(data={self.data.name!r}, step={self.step}/{self.total_steps}, {self.stream!r}, "
                f"{self.context!r})")  # fmt: skip

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if not self.context.is_main:
            return
        save_atomically({
            "step": self.step,
            "model": self.flow.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
            "train_config": dataclasses.asdict(self.config),
            **self.checkpoint_extra,
        }, self.checkpoint_path)  # fmt: skip

    def load_checkpoint(self, path: Optional[Path] = None) -> dict[str, Any]:
        """Restore model, optimizer, scheduler, RNG states and step from ``path`` (default: this run's)."""
        payload = load_checkpoint(path or self.checkpoint_path)
        try:
            self.flow.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"the checkpoint does not fit this model: {str(error).splitlines()[0]}") from None
        self.scheduler.load_state_dict(payload["scheduler"])
        restore_rng(payload["rng"])
        self.step = int(payload["step"])
        return payload

    # -- the loop ---------------------------------------------------------------------------------------------
    def _autocast(self):
        return self.precision.forward_context(self.context.device)

    def _initialize_data_dependent_layers(self) -> None:
        """Run the first global batch through the model once, on every rank, before DDP wraps it.

        Data-dependent initializations (ActNorm) then see the same samples in every process, and the same as
        a single-process run would, instead of each rank initializing from its own shard.
        """
        with torch.no_grad(), self._autocast():
            self.flow.log_prob(*self.stream.global_batch(0))

    def _wrapped(self) -> nn.Module:
        objective = LogProb(self.flow)
        if not self.context.is_distributed:
            return objective
        device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)

    def _train_step(self, objective: nn.Module, x: torch.Tensor, labels: Optional[torch.Tensor]):
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            log_prob = objective(x, labels)
        loss = loss_from_log_prob(log_prob, self.data)
        loss.backward()
        max_norm = self.config.clip_grad if self.config.clip_grad > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.flow.parameters(), max_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), grad_norm.detach()

    def evaluate(self) -> float:
        return evaluate(self.flow, self.data, batch_size=self.config.eval_batch_size, device=self.context.device,
                        conditional=self.config.conditional, precision=self.precision)  # fmt: skip

    def fit(self, *, resume: bool = False) -> TrainResult:
        """Train up to ``total_steps``; with ``resume``, first continue from this run's checkpoint."""
        if self.context.is_main:  # what killed checkpoint or metrics writes left behind
            for path in (self.checkpoint_path, self.metrics_path):
                remove_partial_files(path)
        torch.manual_seed(self.config.seed)
        if resume:
            self.load_checkpoint()
            if self.step > self.total_steps:
                raise CheckpointError(f"the checkpoint {self.checkpoint_path} is at step {self.step}, past the "
                                      f"{self.total_steps} steps this run is set to: a run cannot be shortened")  # fmt: skip
        else:
            self._initialize_data_dependent_layers()
        objective = self._wrapped()
        log = MetricsLog(self.metrics_path, enabled=self.context.is_main, resume_step=self.step if resume else None)
        bar = progress_bar(self.total_steps, "train", self.context.is_main and self.config.progress,
                           initial=self.step, unit="step")  # fmt: skip
        # steps/s count training steps only, not evaluations and checkpoints. Times are taken at log steps, where
        # .item() waits for the device, so asynchronous GPU work is counted where it happens.
        loop_start = window_start = time.perf_counter()
        steps_run = window_steps = 0
        overhead = window_overhead = 0.0
        # On the training device: the final context.mean(loss) is an all_reduce, which nccl refuses for CPU tensors.
        loss, test_metric = torch.tensor(math.nan, device=self.context.device), math.nan
        while self.step < self.total_steps:
            lr = self.scheduler.get_last_lr()[0]
            loss, grad_norm = self._train_step(objective, *self.stream.batch(self.step))
            self.step += 1
            steps_run, window_steps = steps_run + 1, window_steps + 1
            bar.update(1)
            if self.step % self.config.log_every == 0 or self.step == self.total_steps:
                mean_loss = self.context.mean(loss).item()
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(f"the loss became {mean_loss} at step {self.step}: try a lower --lr, "
                                           f"--clip-grad, or --dtype fp32")  # fmt: skip
                now = time.perf_counter()
                rate = window_steps / max(now - window_start - window_overhead, 1e-9)
                log.write({"step": self.step, "split": "train", self.metric: mean_loss, "lr": lr,
                           "grad_norm": grad_norm.item(), "steps_per_s": rate})  # fmt: skip
                window_start, window_steps, window_overhead = now, 0, 0.0
                bar.set_postfix_str(f"{self.metric}={mean_loss:.4f}", refresh=False)
            started = time.perf_counter()
            every = self.config.eval_every
            if self.context.is_main and ((every and self.step % every == 0) or self.step == self.total_steps):
                test_metric = self.evaluate()
                log.write({"step": self.step, "split": "test", self.metric: test_metric})
                bar.write(f"step {self.step}: test {self.metric} {test_metric:.4f}")
            every = self.config.checkpoint_every
            if (every and self.step % every == 0) or self.step == self.total_steps:
                self.save_checkpoint()
            spent = time.perf_counter() - started
            overhead, window_overhead = overhead + spent, window_overhead + spent
        train_time = time.perf_counter() - loop_start - overhead
        bar.close()
        if self.context.is_main and math.isnan(test_metric):  # resumed at the end: nothing was trained
            test_metric = self.evaluate()
        return TrainResult(
            step=self.step, metric=self.metric, train_loss=self.context.mean(loss).item(), test_metric=test_metric,
            steps_per_s=steps_run / train_time if steps_run else math.nan,
            checkpoint=self.checkpoint_path if self.context.is_main else None,
            metrics=self.metrics_path if self.context.is_main else None,
        )  # fmt: skip
