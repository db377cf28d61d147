"""The flat view of a coupling that the fused kernels (Triton, C++ and CUDA) all work from.

Every mask reduces to the same picture. A sample of `x` is `N` contiguous elements, flat index `n`. The elements
that can be transformed form one range `[lo, hi)`; each transformed element has a position `p` in `h`'s parameter
blocks, `p = n - lo`, or read from a per-element table for a compact `h` (pattern "gather"). Its `s_raw` sits at
`h[b, base(p) + s_offset]` and its shift at `h[b, base(p) + t_offset]`, with `h_stride` elements per sample of
`h`, where `base(p) = p`, or `p + (p // pair_inner) * pair_inner` for (t, s_raw) pairs of channels
(`pair_inner` elements a channel of `h`):

* "half": the transformed channels are contiguous, so `[lo, hi)` is exactly the transformed set.
* "checkerboard" and bool masks: `h` has the shape of `x` (per half), `[lo, hi) = [0, N)`, and a per-element
  pattern picks the transformed ones: checkerboard parity computed from indices, or a uint8 mask read from memory.
* a bool mask with a compact `h` (only the transformed elements, in flat order): `[lo, hi) = [0, N)` and an int32
  table gives each element's `p`, or -1 where it is kept.

Additive couplings have no `s_raw`: `h` is `t` alone and `t_offset == 0`.
Kernels write every element of `y` (and of `grad_h`, zeros at kept positions) so no output is left unwritten.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import torch

from ._arguments import ADDITIVE, SCALES, CouplingConfig
from ._spline_arguments import SplineConfig
from ._masks import checkerboard_kept_parity, compact_transformed, half_split_channels, kept_elements

# The kernel interface, defined here once for Python. A scale map's code is its index in SCALE_NAMES, a pattern's
# its index in PATTERN_NAMES; the C++ ops take the layout packed as ints in LAYOUT_FIELDS order. The Triton
# kernels import these codes; csrc/coupling_layout.h declares the three lists for C++ and CUDA, the extension
# exports them (torch.ops.nf_kernels_ext.kernel_codes) and tests/test_extension.py checks that each is a prefix
# of the Python one: new codes and fields are only ever appended, and what a backend's lists lack it does not
# support (backends/extension.py answers that from the exported lists).
SCALE_NAMES = (ADDITIVE, *SCALES)
PATTERN_NAMES = ("range", "checkerboard", "mask", "gather")
LAYOUT_FIELDS = ("lo", "hi", "h_stride", "t_offset", "pattern", "parity", "width", "plane", "scale_code",
                 "shift_first", "reverse", "s_offset", "pair_inner")  # fmt: skip
SCALE_CODES = {name: code for code, name in enumerate(SCALE_NAMES)}
PATTERN_RANGE, PATTERN_CHECKERBOARD, PATTERN_MASK, PATTERN_GATHER = range(len(PATTERN_NAMES))
# The layout fields each h_layout (SPEC section 1) sets beyond the first eleven (which describe "scale_shift"); a
# kernel family that lacks one of them cannot read that layout.
H_LAYOUT_FIELDS = {"scale_shift": (), "shift_scale": ("s_offset",), "shift_scale_pairs": ("s_offset", "pair_inner")}


def h_layout_offsets(h_layout: str, half: int, channel_size: int) -> tuple[int, int, int]:
    """(s_offset, t_offset, pair_inner) of an h layout, for `half` elements a parameter and sample and channels of
    `channel_size` elements in `h`: the kernels' form of SPEC section 1's h_layout table."""
    if h_layout == "scale_shift":  # [s_raw | t]
        return 0, half, 0
    if h_layout == "shift_scale":  # [t | s_raw]
        return half, 0, 0
    if h_layout == "shift_scale_pairs":  # channel 2c is t, 2c + 1 is s_raw, for the c-th channel of transformed elements
        return channel_size, 0, channel_size
    raise ValueError(f"unknown h_layout {h_layout!r}")


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
    s_offset: int = 0  # where s_raw starts, relative to base(p)
    pair_inner: int = 0  # (t, s_raw) channel pairs: elements in a channel of h; 0 for the other layouts
    h_index: Optional[torch.Tensor] = None  # PATTERN_GATHER: int32 [N], p of each transformed element, -1 if kept
    clamp_low: float = 0.0  # the lower bound of a two-sided scale map

    @property
    def additive(self) -> bool:
        return self.scale_code == SCALE_CODES[ADDITIVE]

    def packed(self) -> list[int]:
        """The ints of the C++ ops' `layout` argument, in LAYOUT_FIELDS order (a build of the extension takes the
        prefix it knows)."""
        return [int(getattr(self, field)) for field in LAYOUT_FIELDS]


def transformed_elements(mask: torch.Tensor, flip: bool) -> torch.Tensor:
    """PATTERN_MASK's per-element pattern: uint8 [N], 1 where the coupling with this bool `mask` transforms the
    element. Computed from the mask's contents on every call, never remembered: a mask may change in place."""
    return (~kept_elements(mask.shape, mask, flip)).reshape(-1).to(torch.uint8).contiguous()


class MaskSelection(NamedTuple):
    """Which elements of a sample a mask transforms, in the flat picture: the range [lo, hi) and the pattern inside
    it (shared by the affine and the spline layouts)."""

    lo: int
    hi: int
    pattern: int  # PATTERN_RANGE, PATTERN_CHECKERBOARD or PATTERN_MASK
    parity: int
    width: int
    plane: int
    transformed: Optional[torch.Tensor]  # PATTERN_MASK: uint8 [N], 1 where transformed


def mask_selection(x_shape: Sequence[int], mask: Optional[torch.Tensor], mask_kind: str, flip: bool) -> MaskSelection:
    """The flat form of a "half", "checkerboard" or bool ("tensor") mask over samples of `x_shape` (batch first)."""
    channels = x_shape[1]
    numel = math.prod(x_shape[1:])
    inner = numel // channels if channels else 0  # elements per channel: R = prod(x.shape[2:])
    if mask_kind == "half":
        transformed_channels = half_split_channels(channels, flip)[1]
        return MaskSelection(transformed_channels.start * inner, transformed_channels.stop * inner, PATTERN_RANGE,
                             0, 0, 0, None)  # fmt: skip
    if mask_kind == "checkerboard":
        parity = 1 - checkerboard_kept_parity(flip)  # the kernels test for the transformed parity
        return MaskSelection(0, numel, PATTERN_CHECKERBOARD, parity, x_shape[3], x_shape[2] * x_shape[3], None)
    assert mask is not None and mask_kind == "tensor", mask_kind
    return MaskSelection(0, numel, PATTERN_MASK, 0, 0, 0, transformed_elements(mask, flip))


def flat_layout(
    x: torch.Tensor, mask: Optional[torch.Tensor], config: CouplingConfig, h_shape: Optional[Sequence[int]] = None
) -> FlatLayout:
    """The flat layout of a call. `h_shape` is needed for a compact `h` (mask kind "compact"), whose channels need
    not be `x`'s."""
    batch, channels = x.shape[0], x.shape[1]
    numel = math.prod(x.shape[1:])
    inner = numel // channels if channels else 0  # elements per channel: R = prod(x.shape[2:])
    transformed = h_index = None
    parity = width = plane = 0
    channel_size = inner  # elements in one channel of h
    if config.mask_kind == "compact":
        assert mask is not None and h_shape is not None
        lo, hi = 0, numel
        pattern = PATTERN_GATHER
        selected = compact_transformed(x.shape[1:], mask, config.flip, h_shape, config.additive).to(x.device)
        position = torch.cumsum(selected, 0, dtype=torch.int32) - 1
        h_index = torch.where(selected, position, -1).to(torch.int32).contiguous()
        s_size = math.prod(h_shape[1:]) // (1 if config.additive else 2)
        channel_size = math.prod(h_shape[2:])
    else:
        lo, hi, pattern, parity, width, plane, transformed = mask_selection(x.shape, mask, config.mask_kind, config.flip)
        s_size = hi - lo
    if config.additive:
        h_stride, s_offset, t_offset, pair_inner = s_size, 0, 0, 0
    else:
        h_stride = 2 * s_size
        s_offset, t_offset, pair_inner = h_layout_offsets(config.h_layout, s_size, channel_size)
    return FlatLayout(
        batch, numel, lo, hi, h_stride, t_offset, pattern, parity, width, plane, SCALE_CODES[config.scale],
        config.clamp, config.shift_first, config.reverse, transformed, s_offset, pair_inner, h_index, config.clamp_low,
    )  # fmt: skip


# ---- the spline coupling (SPEC section 1b) --------------------------------------------------------------------

# The C++ spline ops' `layout` ints, in this order (csrc declares the same list; new fields are only appended).
SPLINE_LAYOUT_FIELDS = ("lo", "hi", "params_stride", "inner", "pattern", "parity", "width", "plane", "bins", "reverse")


class SplineLayout(NamedTuple):
    """The flat view of a spline coupling call. The transformed elements are picked exactly as for the affine op
    (:class:`MaskSelection`); parameter j of flat element n in [lo, hi) sits at
    ``params_flat[b * params_stride + (local // inner) * (P * inner) + j * inner + local % inner]``, local = n - lo,
    P = 3 * bins - 1 (the params of a channel are P planes of `inner` elements: nflows' layout along dim 1)."""

    batch: int  # B
    numel: int  # N, elements in one sample of x
    lo: int
    hi: int
    params_stride: int  # elements in one sample of params: (hi - lo) * P
    inner: int  # R = prod(x.shape[2:]), elements per channel
    pattern: int
    parity: int
    width: int
    plane: int
    bins: int  # K
    reverse: bool
    transformed: Optional[torch.Tensor]  # PATTERN_MASK: uint8 [N], 1 where transformed
    bound: float
    min_bin_width: float
    min_bin_height: float
    min_derivative: float

    def packed(self) -> list[int]:
        """The ints of the C++ spline ops' `layout` argument, in SPLINE_LAYOUT_FIELDS order."""
        return [int(getattr(self, field)) for field in SPLINE_LAYOUT_FIELDS]

    def floats(self) -> tuple[float, float, float, float]:
        """The C++ spline ops' float arguments: (bound, min_bin_width, min_bin_height, min_derivative)."""
        return self.bound, self.min_bin_width, self.min_bin_height, self.min_derivative


def spline_flat_layout(x: torch.Tensor, mask: Optional[torch.Tensor], config: SplineConfig) -> SplineLayout:
    """The flat layout of a spline coupling call."""
    channels = x.shape[1]
    numel = math.prod(x.shape[1:])
    inner = numel // channels if channels else 0
    selection = mask_selection(x.shape, mask, config.mask_kind, config.flip)
    per_element = config.params_per_element
    return SplineLayout(
        x.shape[0], numel, selection.lo, selection.hi, (selection.hi - selection.lo) * per_element, inner,
        selection.pattern, selection.parity, selection.width, selection.plane, config.bins, config.reverse,
        selection.transformed, config.bound, config.min_bin_width, config.min_bin_height, config.min_derivative,
    )  # fmt: skip
