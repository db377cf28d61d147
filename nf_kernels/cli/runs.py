"""Opening a finished (or running) training run for ``eval`` and ``sample``: model, data and settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import FlowDataset, load_dataset
from ..training import CheckpointError, load_checkpoint
from ..training.distributed import choose_device
from ..training.model_spec import ModelSpec
from ..training.precision import PRECISIONS, Precision
from .settings import check_backend

CHECKPOINT_NAME = "checkpoint.pt"


def checkpoint_path(run: Path) -> Path:
    """A run directory means its checkpoint; a file is taken as the checkpoint itself."""
    return run / CHECKPOINT_NAME if run.is_dir() else run


@dataclass
class LoadedRun:
    """A checkpoint's model (in eval mode, on its device) together with its data set and settings."""

    path: Path
    flow: nn.Module
    spec: ModelSpec
    data: FlowDataset
    settings: dict[str, Any]  # the resolved command-line settings of the training run
    step: int

    @property
    def precision(self) -> Precision:
        return PRECISIONS[self.settings["dtype"]]

    @property
    def directory(self) -> Path:
        return self.path.parent

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.path)!r}, {self.spec.describe()}, data={self.data.name!r}, step={self.step})"


def open_run(run: Path, *, backend: str, device: str) -> LoadedRun:
    path = checkpoint_path(run)
    payload = load_checkpoint(path)
    if "model_spec" not in payload or "cli" not in payload:
        raise CheckpointError(f"{path} was not written by 'nf-kernels train' (no model description in it)")
    spec = ModelSpec.from_dict(payload["model_spec"])
    settings = payload["cli"]
    target = choose_device(device)
    check_backend(backend, target)
    data = load_dataset(settings["data"], data_seed=settings["data_seed"], levels=settings["levels"])
    flow = spec.build(backend=backend)
    try:
        flow.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit {spec.describe()}: {str(error).splitlines()[0]}") from None
    flow.to(target, PRECISIONS[settings["dtype"]].parameters).eval()
    return LoadedRun(path, flow, spec, data, settings, int(payload["step"]))


def flow_device(flow: nn.Module) -> torch.device:
    return next(flow.parameters()).device
