"""How the peer libraries' splits of dim 1 become the fused ops' masks.

Every supported library keeps some entries of dim 1 (features, or channels of images) and transforms the others,
and its conditioner reads the kept ones. Where the split is nf_kernels' own "half" (the first C // 2 kept, or with
flip the last C // 2) the op takes mask="half" and the conditioner a slice of x; any other split is a bool mask over
the sample made of a channel mask, with a compact h (only the transformed channels): the op's general path.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor


def half_flip(kept: Sequence[bool]) -> Optional[bool]:
    """The op's `flip` for mask="half" when it keeps exactly the entries `kept` of dim 1 (True where kept), or None
    when no "half" mask does."""
    channels, count = len(kept), sum(map(bool, kept))
    if count != channels // 2:
        return None
    if all(kept[:count]):
        return False  # the first C // 2 kept
    if all(kept[channels - count :]):
        return True  # the last C // 2 kept
    return None


def range_flip(channels: int, start: int, stop: int) -> Optional[bool]:
    """half_flip of the split that keeps channels [start, stop)."""
    if (start, stop) == (0, channels // 2):
        return False
    if (start, stop) == (channels - channels // 2, channels):
        return True
    return None


def channel_mask(kept: Tensor, x: Tensor) -> Tensor:
    """The op's bool mask for x of shape [B, C, ...] that keeps the channels where `kept` (bool [C]) is True: an
    expanded view, nothing copied."""
    return kept.view(-1, *([1] * (x.dim() - 2))).expand(x.shape[1:])


def range_mask(x: Tensor, start: int, stop: int):
    """(mask, flip) of the op for keeping channels [start, stop) of x: "half" where that is one, else a channel mask
    built on x's device (with a compact h)."""
    flip = range_flip(x.shape[1], start, stop)
    if flip is not None:
        return "half", flip
    channel = torch.arange(x.shape[1], device=x.device)
    return channel_mask((channel >= start) & (channel < stop), x), False


def half_kept(x: Tensor, flip: bool, dim: int = 1) -> Tensor:
    """The kept entries of dim `dim` under the op's "half" mask, a view of x."""
    size = x.shape[dim]
    return x.narrow(dim, size - size // 2, size // 2) if flip else x.narrow(dim, 0, size // 2)
