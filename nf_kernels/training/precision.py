"""Numeric precision of a run: the parameter (and data) dtype, and whether the forward pass runs under autocast."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch


@dataclass(frozen=True)
class Precision:
    """``fp32`` (default), ``bf16`` (fp32 weights, bf16 autocast of the forward) or ``fp64`` (exact comparisons).

    >>> PRECISIONS["bf16"]
    Precision('bf16': float32 parameters, bfloat16 autocast)
    """

    name: str
    parameters: torch.dtype
    autocast: Optional[torch.dtype] = None

    def forward_context(self, device: torch.device) -> ContextManager:
        """Where a forward pass runs: under autocast for bf16, plain otherwise."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)

    def __repr__(self) -> str:
        cast = f", {str(self.autocast).removeprefix('torch.')} autocast" if self.autocast else ""
        return f"Precision({self.name!r}: {str(self.parameters).removeprefix('torch.')} parameters{cast})"


PRECISIONS = {
    "fp32": Precision("fp32", torch.float32),
    "bf16": Precision("bf16", torch.float32, torch.bfloat16),
    "fp64": Precision("fp64", torch.float64),
}
