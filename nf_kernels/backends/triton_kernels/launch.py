"""Launch geometry and dtype choices shared by the Triton launchers."""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

# Elements one program handles, for 4-byte dtypes (BLOCK elements of each of ROWS samples; other dtypes scale it to
# the same bytes): 2048 over 8 warps is 32 bytes of x, two 16-byte groups, a thread. That is about 60 registers in
# the backward (sm_90), so 4 programs fit an SM with every load issued before the first use. Tests lower it to
# force multi-block samples (the two-stage log-det reduction) at the small sizes the interpreter can afford.
MAX_BLOCK = 2048
# A tile's in-sample indices are int32 (no 64-bit arithmetic per element).
MAX_SAMPLE_NUMEL = 2**31 - 1 - 2 * MAX_BLOCK
# The bool mask's element type, by x's itemsize: a thread's share of the mask is then one 16-byte load too.
MASK_DTYPES = {2: torch.uint8, 4: torch.int16, 8: torch.int32}


class LaunchShape(NamedTuple):
    """The grid of a coupling kernel: tiles of `rows` samples by `block` elements, block-fastest.

    A sample larger than a program is cut into `nblk` blocks; smaller samples are packed `rows` to a program
    (vector flows: [B, 64] float32 gets 32 samples a program), so every program has up to MAX_BLOCK elements
    (scaled by dtype) and every thread several 16-byte groups, whatever the sample size.
    """

    block: int  # elements of a sample per program, a power of two
    nblk: int  # programs along a sample
    rows: int  # samples per program, a power of two
    programs: int  # the grid
    num_warps: int

    @classmethod
    def for_layout(cls, layout, itemsize: int, shrink: int = 1) -> "LaunchShape":
        """`shrink`: programs of MAX_BLOCK / shrink elements (4-byte dtypes), for kernels that hold more registers
        an element than the affine ones."""
        if layout.numel > MAX_SAMPLE_NUMEL:
            raise RuntimeError(
                f"the Triton kernels index a sample with 32-bit integers: {layout.numel} elements a sample is more "
                f"than {MAX_SAMPLE_NUMEL}; use backend='cuda' or 'reference'"
            )
        most = max(16, MAX_BLOCK * 4 // itemsize // shrink)
        block = min(most, max(16, triton.next_power_of_2(layout.numel)))
        nblk = triton.cdiv(layout.numel, block)
        rows = max(1, min(most // block, triton.next_power_of_2(layout.batch)))
        programs = triton.cdiv(layout.batch, rows) * nblk
        return cls(block, nblk, rows, programs, 8 if block * rows * itemsize >= 8192 else 4)


def mask_argument(layout, x: torch.Tensor) -> torch.Tensor:
    """The kernels' `mask_ptr`: the layout's transformed-element mask in the width that loads 16 bytes a thread
    (see MASK_DTYPES), a compact h's int32 table of positions, or `x` as a pointer that is never read when the
    pattern needs neither."""
    if getattr(layout, "h_index", None) is not None:  # the spline layout has no compact form
        return layout.h_index
    if layout.transformed is None:
        return x
    return layout.transformed.to(MASK_DTYPES[x.element_size()])


def scale_constants(layout) -> dict:
    """The scale map's constexprs: its bounds, and 1 / CLAMP so the kernels multiply (0 where a two-sided map's
    upper bound is 0: only the one-sided maps read it)."""
    inverse = 1.0 / layout.clamp if layout.clamp != 0 else 0.0
    return dict(CLAMP=layout.clamp, INV_CLAMP=inverse, CLAMP_LOW=layout.clamp_low)


def compute_tl_dtype(dtype: torch.dtype):
    """float32 arithmetic for every input dtype except float64 (SPEC: dtypes)."""
    return tl.float64 if dtype == torch.float64 else tl.float32
