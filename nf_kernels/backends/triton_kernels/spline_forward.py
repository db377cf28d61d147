"""Fused rational-quadratic spline coupling forward/inverse in Triton: one pass reads x and the 3K - 1 parameters
of each transformed element once, writes y and the log-det once.

The grid and the log-det reduction are the affine forward's (forward.py): tiles of ROWS samples by BLOCK elements,
one partial log-det per (sample, block), added in a fixed order by its second kernel when a sample spans several
blocks. Tiles are smaller than the affine kernels' (SPLINE_SHRINK): an element holds three KP-lane tiles of
parameters in registers.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..._arguments import logdet_dtype
from ..._outputs import new_output
from .forward import sum_partials
from .indexing import program_tile, tile_touches_range, transformed_elements
from .launch import LaunchShape, compute_tl_dtype, mask_argument
from .spline_math import rq_value, spline_point
from .spline_params import load_params_by_lanes, load_params_by_rows

# Programs of launch.MAX_BLOCK / 8 = 256 elements for 4-byte dtypes (LaunchShape.for_layout), each element with
# three KP-lane tiles of parameters in registers.
SPLINE_SHRINK = 8
# Elements a thread: ALIGN consecutive ones (one 16-byte load of each parameter for float32, up to PER_THREAD), and
# at least FORWARD_LEAST or BACKWARD_LEAST. sm_90, 8 bins, float32, 4 elements a thread: the forward takes about
# 166 registers, the backward 230 with 16-byte loads (it keeps two softmax tiles, not the derivatives' tile:
# knot_derivatives), both without spills. A vector flow reads its parameters by rows (spline_params.py, 128-bit
# accesses): the forward takes 168 registers at 4, the backward 200 at 2 and spills at 4 (255 registers, about 600
# spill instructions), so it takes 2 (BACKWARD_LEAST_BY_ROWS).
PER_THREAD = 4
FORWARD_LEAST = 4
BACKWARD_LEAST = 2
BACKWARD_LEAST_BY_ROWS = 2
# The largest [ROWS, SPAN] block of parameter rows a program reads by rows (float32: 16 KB of shared memory for
# tl.gather, 64 registers a thread at 2 warps while it is loaded); a tile of more reads by lanes.
MAX_ROW_BLOCK = 4096


def spline_launch(
    layout, params: torch.Tensor, least: int, least_by_rows: Optional[int]
) -> tuple[LaunchShape, int, int]:
    """(launch shape, ALIGN, SPAN) of a spline kernel. ALIGN (indexing.spline_param_offsets): the elements whose
    parameters a thread loads as one vector, the largest power of two that divides the elements a channel and
    fits 16 bytes and PER_THREAD. SPAN: 0 to read the parameters by lanes, else the power of two the parameter rows
    are padded to when they are read by rows (spline_params.py: an element's parameters side by side, inner 1, and
    tiles of whole samples; never when least_by_rows is None). The warps are then chosen so that each thread has max(ALIGN, least) elements
    (least_by_rows when read by rows) and all KP lanes of each: fewer warps would split an element's lanes over
    warps, and its sums over lanes with them."""
    if layout.params_stride > 2**31 - 1:
        raise RuntimeError(
            f"the Triton spline kernels index a sample's parameters with 32-bit integers: {layout.params_stride} "
            "parameters a sample is more than 2^31 - 1; use backend='cuda' or 'reference'"
        )
    shape = LaunchShape.for_layout(layout, params.element_size(), SPLINE_SHRINK)
    align = 1
    while align * 2 <= min(PER_THREAD, 16 // params.element_size()) and layout.inner % (align * 2) == 0:
        align *= 2
    span = triton.next_power_of_2(max(layout.params_stride, 1))
    if least_by_rows is not None and layout.inner == 1 and shape.nblk == 1 and shape.rows * span <= MAX_ROW_BLOCK:
        least = least_by_rows
    else:
        span = 0
    elements = shape.block * shape.rows
    return shape._replace(num_warps=max(1, min(8, elements // (32 * max(align, least))))), align, span


def spline_mask_argument(layout, x: torch.Tensor) -> torch.Tensor:
    """launch.mask_argument for the spline kernels: a bool mask as int32, 16 bytes for 4 elements a thread."""
    if layout.transformed is not None:
        return layout.transformed.to(torch.int32)
    return mask_argument(layout, x)


@triton.jit
def load_spline_params(params_ptr, rows, p, p_mask, B, params_stride, inner, K: tl.constexpr, KP: tl.constexpr,
                       ALIGN: tl.constexpr, SPAN: tl.constexpr, CT: tl.constexpr, ROWS: tl.constexpr,
                       BLOCK: tl.constexpr):  # fmt: skip
    """The tile's (widths, heights, interior derivatives), unconstrained, as [KP, ROWS, BLOCK] tiles in CT (spline_math.py), and
    the lane index: read by rows when SPAN > 0 (spline_params.py), else by lanes."""
    if SPAN > 0:
        uw, uh, ud = load_params_by_rows(params_ptr, rows, p, p_mask, B, params_stride, K, KP, SPAN, CT, ROWS, BLOCK)
    else:
        uw, uh, ud = load_params_by_lanes(params_ptr, rows, p, p_mask, params_stride, inner, K, KP, ALIGN, CT)
    return uw, uh, ud, tl.arange(0, KP)[:, None, None]


@triton.jit(do_not_specialize=["inner"])  # see indexing.spline_param_offsets
def _spline_forward_kernel(
    x_ptr, params_ptr, mask_ptr, y_ptr, partial_ptr,
    B, N, nblk, lo, hi, params_stride, inner, W, PLANE,
    PATTERN: tl.constexpr, PARITY: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, BOUND: tl.constexpr,
    MIN_W: tl.constexpr, MIN_H: tl.constexpr, MIN_D: tl.constexpr, REVERSE: tl.constexpr, CT: tl.constexpr,
    ALIGN: tl.constexpr, SPAN: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """y and the per-(sample, block) partial log-det of a tile of ROWS samples by BLOCK elements.

    x_ptr, y_ptr: [B, N], x's dtype. params_ptr: [B, params_stride], the parameters of the elements in [lo, hi)
    (nf_kernels._layout's spline layout, `inner` elements a channel). mask_ptr: as in forward.py. partial_ptr:
    [B, nblk], CT. Elements outside [-BOUND, BOUND] (and kept ones) pass through and add nothing.
    """
    rows, n, in_bounds, blk = program_tile(B, N, nblk, BLOCK, ROWS)
    x = tl.load(x_ptr + rows * N + n, mask=in_bounds, other=0.0).to(CT)
    if tile_touches_range(blk, lo, hi, BLOCK):
        in_range, sel, p, p_mask = transformed_elements(n, in_bounds, lo, hi, mask_ptr, W, PLANE, PATTERN, PARITY)
        uw, uh, ud, lane = load_spline_params(params_ptr, rows, p, p_mask, B, params_stride, inner, K, KP, ALIGN, SPAN,
                                              CT, ROWS, BLOCK)  # fmt: skip
        inside, theta, k, xk, w, yk, h, s, d0, d1, sw, sh, u0, u1 = spline_point(
            x, sel, uw, uh, ud, lane, K, BOUND, MIN_W, MIN_H, MIN_D, REVERSE
        )
        if REVERSE:
            out = xk + theta * w
            _, term = rq_value(theta, yk, h, s, d0, d1)
            term = -term
        else:
            out, term = rq_value(theta, yk, h, s, d0, d1)
        y = tl.where(inside, out, x)
        total = tl.sum(tl.where(inside, term, 0.0), axis=1)
    else:
        y = x
        total = tl.zeros([ROWS], dtype=CT)
    tl.store(y_ptr + rows * N + n, y.to(y_ptr.dtype.element_ty), mask=in_bounds)
    sample = tl.reshape(rows, [ROWS])
    tl.store(partial_ptr + sample * nblk + blk, total, mask=sample < B)


def spline_constants(layout) -> dict:
    """The spline's constexprs: the bins (and their power-of-two lane count) and the four floats."""
    return dict(
        K=layout.bins, KP=triton.next_power_of_2(layout.bins), BOUND=float(layout.bound),
        MIN_W=float(layout.min_bin_width), MIN_H=float(layout.min_bin_height), MIN_D=float(layout.min_derivative),
    )  # fmt: skip


def launch_spline_forward(x: torch.Tensor, params: torch.Tensor, layout) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the spline forward (or inverse, per layout.reverse) on contiguous x and params; returns (y, logdet).
    `layout` is the spline flat layout (nf_kernels._layout.SplineLayout)."""
    shape, align, span = spline_launch(layout, params, FORWARD_LEAST, FORWARD_LEAST)
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = new_output(x.shape, x.dtype, x.device)
    logdet = new_output((layout.batch,), logdet_dtype(x.dtype), x.device)
    partial = new_output((layout.batch, shape.nblk), ct, x.device)
    _spline_forward_kernel[(shape.programs,)](
        x, params, spline_mask_argument(layout, x), y, partial,
        layout.batch, layout.numel, shape.nblk, layout.lo, layout.hi, layout.params_stride, layout.inner,
        layout.width, layout.plane,
        PATTERN=layout.pattern, PARITY=layout.parity, **spline_constants(layout), REVERSE=layout.reverse,
        CT=compute_tl_dtype(x.dtype), ALIGN=align, SPAN=span, BLOCK=shape.block, ROWS=shape.rows, num_warps=shape.num_warps,
    )  # fmt: skip
    sum_partials(partial, logdet)
    return y, logdet
