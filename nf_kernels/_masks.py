"""What each mask keeps, and the shape of `h` it needs: SPEC section 1's mask table, written once.

Every layer of the library reads the masks from here: the argument checks (`_arguments`), the flow layers (what
a conditioner sees), the reference backend (which elements it transforms) and the kernels' flat layout
(`_layout`, whose checkerboard parity is :func:`checkerboard_kept_parity`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

MASKS = ("half", "checkerboard")
MaskArg = Union[str, torch.Tensor]


def checkerboard_kept_parity(flip: bool) -> int:
    """Element ``(c, i, j)`` is kept where ``(i + j) % 2`` equals this: 1 without flip (the RealNVP paper's
    b = 1), 0 with it."""
    return 0 if flip else 1


def kept_elements(sample_shape: Sequence[int], mask: MaskArg, flip: bool, device=None) -> torch.Tensor:
    """A bool tensor of one sample's shape, True where a coupling with this checkerboard or bool `mask` keeps
    (passes through) the element. The "half" mask splits channels instead and has no such tensor."""
    if isinstance(mask, torch.Tensor):
        return (~mask if flip else mask).to(device)
    if mask != "checkerboard":
        raise ValueError(f"kept_elements is for 'checkerboard' and bool masks, got {mask!r}")
    height, width = sample_shape[1], sample_shape[2]
    i = torch.arange(height, device=device).view(height, 1)
    j = torch.arange(width, device=device).view(1, width)
    kept = (i + j) % 2 == checkerboard_kept_parity(flip)
    return kept.expand(tuple(sample_shape))


def half_split_channels(channels: int, flip: bool) -> tuple[slice, slice]:
    """("half" mask) the (kept, transformed) slices of dim 1: the first C//2 kept without flip, the last C//2 with
    it, so `h` has the same shape either way."""
    n_kept = channels // 2
    if flip:
        return slice(channels - n_kept, channels), slice(0, channels - n_kept)
    return slice(0, n_kept), slice(n_kept, channels)


def expected_h_shape(x_shape: Sequence[int], mask_kind: str, additive: bool) -> tuple[int, ...]:
    """The shape the conditioner output must have for `x` of shape `x_shape` (batch first): for "half" the
    transformed channels' `s_raw` then `t` (or `t` alone, additive), else `x`'s shape with dim 1 doubled (or not)."""
    shape = list(x_shape)
    channels = shape[1]
    if mask_kind == "half":
        transformed = channels - channels // 2
        shape[1] = transformed if additive else 2 * transformed
    elif not additive:
        shape[1] = 2 * channels
    return tuple(shape)


def expected_params_shape(x_shape: Sequence[int], mask_kind: str, per_element: int) -> tuple[int, ...]:
    """The shape of a spline coupling's `params` (SPEC section 1b) for `x` of shape `x_shape`: `x`'s shape with dim 1
    holding `per_element` parameters for each channel the mask can transform: the transformed channels for "half"
    (as :func:`expected_h_shape`), every channel for the others (values at kept positions are ignored)."""
    shape = list(x_shape)
    channels = shape[1]
    covered = channels - channels // 2 if mask_kind == "half" else channels
    shape[1] = covered * per_element
    return tuple(shape)


def could_be_compact(x_shape: Sequence[int], h_shape: Sequence[int], additive: bool) -> bool:
    """Whether `h_shape` can be a compact `h` for a bool mask over samples of `x_shape` (SPEC mask table): only the
    transformed elements, batch first, with dim 1 even for an affine `h` (its two parameters). How many elements
    it must hold depends on the mask's values, so that is checked where they are read (:func:`transformed_count`)."""
    if len(h_shape) < 2 or h_shape[0] != x_shape[0]:
        return False
    return additive or h_shape[1] % 2 == 0


def compact_transformed(
    sample_shape: Sequence[int], mask: torch.Tensor, flip: bool, h_shape: Sequence[int], additive: bool
) -> torch.Tensor:
    """The transformed elements of a compact coupling, a flat bool tensor of one sample, after checking that `h`
    holds exactly one value per parameter and transformed element (a ValueError naming both counts otherwise).

    Reads the mask's values (a host sync on a GPU): the op's backends call it, never the tracing-time checks."""
    transformed = ~kept_elements(sample_shape, mask, flip).reshape(-1)
    count = int(transformed.sum())
    per_sample = math.prod(h_shape[1:])
    parameters = 1 if additive else 2
    if per_sample != parameters * count:
        name = "t" if additive else "h"
        raise ValueError(
            f"{name} of shape {tuple(h_shape)} is neither the full shape for this mask nor compact: the mask "
            f"transforms {count} elements of a sample, so a compact {name} holds {parameters * count} values a sample "
            f"({'' if additive else 's_raw and t for '}each transformed element, in flat order), not {per_sample}"
        )
    return transformed


def check_mask(mask: MaskArg, sample_shape: Sequence[int], device: Optional[torch.device] = None) -> str:
    """The mask kind ("half", "checkerboard" or "tensor") of `mask` for samples of `sample_shape` (and, when
    given, on `device`); TypeError or ValueError naming what fits otherwise (SPEC section 1 error table)."""
    sample_shape = tuple(sample_shape)
    if isinstance(mask, torch.Tensor):
        if mask.dtype != torch.bool:
            raise TypeError(f"a mask tensor must have dtype torch.bool, got {mask.dtype}")
        if tuple(mask.shape) != sample_shape:
            raise ValueError(
                f"a bool mask must have the sample shape {sample_shape} (x.shape[1:]); got {tuple(mask.shape)}"
            )
        if device is not None and mask.device != device:
            raise ValueError(f"mask is on {mask.device} but x is on {device}; put them on one device")
        return "tensor"
    if not isinstance(mask, str) or mask not in MASKS:
        raise ValueError(f"unknown mask {mask!r}: valid choices are {', '.join(map(repr, MASKS))} or a bool tensor")
    if mask == "checkerboard" and len(sample_shape) != 3:
        raise ValueError(
            f"mask='checkerboard' needs image samples (C, H, W), x of shape [B, C, H, W]; got sample shape "
            f"{sample_shape}"
        )
    return mask
