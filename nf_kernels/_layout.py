"""The flat view of a coupling that the fused kernels (Triton, C++ and CUDA) all work from.

Every mask reduces to the same picture. A sample of `x` is `N` contiguous elements, flat index `n`. The elements
that can be transformed form one range `[lo, hi)`; for each of them, `s_raw` sits at `h[b, n - lo]` and the
shift at `h[b, n - lo + t_offset]`, with `h_stride` elements per sample of `h`:

* "half": the transformed channels are contiguous, so `[lo, hi)` is exactly the transformed set.
* "checkerboard" and bool masks: `h` has the shape of `x` (per half), `[lo, hi) = [0, N)`, and a per-element
  pattern picks the transformed ones: checkerboard parity computed from indices, or a uint8 mask read from memory.

Additive couplings have no `s_raw`: `h` is `t` alone and `t_offset == 0`.
Kernels write every element of `y` (and of `grad_h`, zeros at kept positions) so no output is left unwritten.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ._arguments import ADDITIVE, SCALES, CouplingConfig
from ._masks import checkerboard_kept_parity, half_split_channels, kept_elements

# The kernel interface, defined here once for Python. A scale map's code is its index in SCALE_NAMES, a pattern's
# its index in PATTERN_NAMES; the C++ ops take the layout packed as ints in LAYOUT_FIELDS order. The Triton
# kernels import these codes; csrc/coupling_layout.h declares the same three lists for C++ and CUDA, the
# extension exports them (torch.ops.nf_kernels_ext.kernel_codes) and tests/test_extension.py checks they agree.
SCALE_NAMES = (ADDITIVE, *SCALES)
PATTERN_NAMES = ("range", "checkerboard", "mask")
LAYOUT_FIELDS = ("lo", "hi", "h_stride", "t_offset", "pattern", "parity", "width", "plane", "scale_code",
                 "shift_first", "reverse")  # fmt: skip
SCALE_CODES = {name: code for code, name in enumerate(SCALE_NAMES)}
PATTERN_RANGE, PATTERN_CHECKERBOARD, PATTERN_MASK = range(len(PATTERN_NAMES))


class FlatLayout(NamedTuple):
    batch: int  # B
    numel: int  # N, elements in one sample of x
    lo: int  # first flat index that may be transformed
    hi: int  # one past the last
    h_stride: int  # elements in one sample of h
    t_offset: int  # where the shift starts, relative to s_raw, inside a sample of h
    pattern: int  # PATTERN_RANGE, PATTERN_CHECKERBOARD or PATTERN_MASK
    parity: int  # checkerboard: transformed where (i + j) % 2 == parity
    width: int  # checkerboard: W
    plane: int  # checkerboard: H * W
    scale_code: int  # SCALE_CODES[config.scale]
    clamp: float
    shift_first: bool
    reverse: bool
    transformed: Optional[torch.Tensor]  # PATTERN_MASK: uint8 [N], 1 where transformed

    @property
    def additive(self) -> bool:
        return self.scale_code == SCALE_CODES[ADDITIVE]

    def packed(self) -> list[int]:
        """The ints of the C++ ops' `layout` argument, in LAYOUT_FIELDS order."""
        return [int(getattr(self, field)) for field in LAYOUT_FIELDS]


def transformed_elements(mask: torch.Tensor, flip: bool) -> torch.Tensor:
    """PATTERN_MASK's per-element pattern: uint8 [N], 1 where the coupling with this bool `mask` transforms the
    element. Computed from the mask's contents on every call, never remembered: a mask may change in place."""
    return (~kept_elements(mask.shape, mask, flip)).reshape(-1).to(torch.uint8).contiguous()


def flat_layout(x: torch.Tensor, mask: Optional[torch.Tensor], config: CouplingConfig) -> FlatLayout:
    batch, channels = x.shape[0], x.shape[1]
    numel = math.prod(x.shape[1:])
    inner = numel // channels if channels else 0  # elements per channel: R = prod(x.shape[2:])
    parity = width = plane = 0
    transformed = None
    if config.mask_kind == "half":
        transformed_channels = half_split_channels(channels, config.flip)[1]
        lo, hi = transformed_channels.start * inner, transformed_channels.stop * inner
        pattern = PATTERN_RANGE
        s_size = hi - lo
    else:
        lo, hi, s_size = 0, numel, numel
        if config.mask_kind == "checkerboard":
            pattern = PATTERN_CHECKERBOARD
            parity = 1 - checkerboard_kept_parity(config.flip)  # the kernels test for the transformed parity
            width, plane = x.shape[3], x.shape[2] * x.shape[3]
        else:
            assert mask is not None
            pattern = PATTERN_MASK
            transformed = transformed_elements(mask, config.flip)
    if config.additive:
        h_stride, t_offset = s_size, 0
    else:
        h_stride, t_offset = 2 * s_size, s_size
    return FlatLayout(
        batch, numel, lo, hi, h_stride, t_offset, pattern, parity, width, plane, SCALE_CODES[config.scale],
        config.clamp, config.shift_first, config.reverse, transformed,
    )  # fmt: skip
