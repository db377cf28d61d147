"""A stand-in for spline-ref's spline flat layout (nf_kernels/_layout.py), until that branch is merged: the affine
op's mask reduction plus the spline's parameter fields. Removed at the merge."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from .._arguments import CouplingConfig
from .._layout import flat_layout

SPLINE_LAYOUT_FIELDS = ("lo", "hi", "params_stride", "inner", "pattern", "parity", "width", "plane", "bins", "reverse")


class SplineLayout(NamedTuple):
    lo: int
    hi: int
    params_stride: int
    inner: int
    pattern: int
    parity: int
    width: int
    plane: int
    bins: int
    reverse: bool
    transformed: Optional[torch.Tensor]

    def packed(self) -> list[int]:
        return [int(getattr(self, field)) for field in SPLINE_LAYOUT_FIELDS]


def spline_flat_layout(x: torch.Tensor, mask: Optional[torch.Tensor], config) -> SplineLayout:
    affine = flat_layout(x, mask, CouplingConfig(config.mask_kind, config.flip, "exp", 1.0, False, config.reverse))
    inner = math.prod(x.shape[2:])
    per_element = 3 * config.bins - 1
    return SplineLayout(
        affine.lo, affine.hi, (affine.hi - affine.lo) * per_element, inner, affine.pattern, affine.parity,
        affine.width, affine.plane, config.bins, config.reverse, affine.transformed,
    )  # fmt: skip
