"""The reference backend's masks, as tensors: which elements a call transforms (SPEC section 1's mask table, from
`nf_kernels._masks`). Shared by the reference's affine and spline couplings."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._masks import half_split_channels, kept_elements


def transformed_elements(x: Tensor, mask: Optional[Tensor], config) -> Tensor:
    """For checkerboard and bool masks: a bool tensor of shape x.shape[1:], True where transformed."""
    mask_arg = mask if config.mask_kind in ("tensor", "compact") else config.mask_kind
    return ~kept_elements(x.shape[1:], mask_arg, config.flip, device=x.device)


def half_split(v: Tensor, config) -> tuple[Tensor, Tensor]:
    """For the "half" mask: (kept, transformed) channels of v along dim 1."""
    kept, transformed = half_split_channels(v.shape[1], config.flip)
    return v[:, kept], v[:, transformed]


def half_join(kept: Tensor, transformed: Tensor, config) -> Tensor:
    return torch.cat([transformed, kept] if config.flip else [kept, transformed], dim=1)
