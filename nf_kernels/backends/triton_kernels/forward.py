"""Fused coupling forward/inverse in Triton: one pass reads x and h once, writes y and the log-det once.

Grid: one program per tile of ROWS samples by BLOCK elements (launch.LaunchShape), flattened on axis 0 (axis 1
would cap the batch at 65535). Each program writes its tile of y and one partial log-det sum per sample of the
tile. When a sample spans more than one block, a second tiny kernel adds the partials of each sample in a fixed
order: no atomics, so the log-det is bitwise reproducible.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._arguments import logdet_dtype
from ..._layout import FlatLayout
from ..._outputs import new_output
from .coupling_math import ADDITIVE, coupling_step, log_scale
from .indexing import h_position, program_tile, tile_touches_range, transformed_elements
from .launch import LaunchShape, compute_tl_dtype, mask_argument, scale_constants


@triton.jit
def _coupling_forward_kernel(
    x_ptr, h_ptr, mask_ptr, y_ptr, partial_ptr,
    B, N, nblk, lo, hi, h_stride, t_offset, s_offset, pair_inner, W, PLANE,
    PATTERN: tl.constexpr, PARITY: tl.constexpr, SCALE: tl.constexpr, CLAMP: tl.constexpr, INV_CLAMP: tl.constexpr,
    CLAMP_LOW: tl.constexpr, PAIRS: tl.constexpr,
    SHIFT_FIRST: tl.constexpr, REVERSE: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """y and the per-(sample, block) partial log-det of a tile of ROWS samples by BLOCK elements.

    x_ptr, y_ptr: [B, N], x's dtype. h_ptr: [B, h_stride], s_raw at base(p) + s_offset and t at base(p) + t_offset
    for the element at n in [lo, hi), p = n - lo or read from mask_ptr (nf_kernels._layout). mask_ptr: [N] integers,
    nonzero where transformed (PATTERN_MASK, launch.MASK_DTYPES), or int32 positions, -1 where kept
    (PATTERN_GATHER). partial_ptr: [B, nblk], the compute type CT (never written for the additive coupling).
    Every load is masked by ranges only (bounds, [lo, hi)), so it vectorizes, but a compact h's (masked by the
    elements that have a position); which elements are transformed is applied to the values afterwards. A tile
    that lies wholly outside [lo, hi) copies x and adds nothing.
    """
    rows, n, in_bounds, blk = program_tile(B, N, nblk, BLOCK, ROWS)
    x = tl.load(x_ptr + rows * N + n, mask=in_bounds, other=0.0).to(CT)
    if tile_touches_range(blk, lo, hi, BLOCK):
        in_range, sel, p, h_mask = transformed_elements(n, in_bounds, lo, hi, mask_ptr, W, PLANE, PATTERN, PARITY)
        h_at = h_ptr + rows * h_stride + h_position(p, pair_inner, PAIRS)
        t = tl.load(h_at + t_offset, mask=h_mask, other=0.0).to(CT)
        if SCALE != ADDITIVE:
            s = tl.load(h_at + s_offset, mask=h_mask, other=0.0).to(CT)
            a = tl.where(sel, log_scale(s, SCALE, CLAMP, INV_CLAMP, CLAMP_LOW), 0.0)
        else:
            a = tl.zeros_like(x)
        y = tl.where(sel, coupling_step(x, a, t, SCALE, SHIFT_FIRST, REVERSE), x)
        total = tl.sum(a, axis=1)
    else:
        y = x
        total = tl.zeros([ROWS], dtype=CT)
    tl.store(y_ptr + rows * N + n, y.to(y_ptr.dtype.element_ty), mask=in_bounds)
    if SCALE != ADDITIVE:
        if REVERSE:
            total = -total
        sample = tl.reshape(rows, [ROWS])
        tl.store(partial_ptr + sample * nblk + blk, total, mask=sample < B)


@triton.jit
def _sum_partials_kernel(partial_ptr, out_ptr, nblk, BLOCK: tl.constexpr):
    """out[b] = sum of the nblk partials of sample b, always added in the same order."""
    b = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([BLOCK], dtype=partial_ptr.dtype.element_ty)
    for start in range(0, nblk, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        acc += tl.load(partial_ptr + b * nblk + idx, mask=idx < nblk, other=0.0)
    tl.store(out_ptr + b, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty))


def launch_forward(x: torch.Tensor, h: torch.Tensor, layout: FlatLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward (or inverse, per layout.reverse) kernel on contiguous x and h; returns (y, logdet)."""
    shape = LaunchShape.for_layout(layout, x.element_size())
    ct = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = new_output(x.shape, x.dtype, x.device)
    logdet = new_output((layout.batch,), logdet_dtype(x.dtype), x.device)
    if layout.additive:
        logdet.zero_()
        partial = logdet  # never written by the kernel
    else:
        partial = new_output((layout.batch, shape.nblk), ct, x.device)
    mask = mask_argument(layout, x)
    _coupling_forward_kernel[(shape.programs,)](
        x, h, mask, y, partial,
        layout.batch, layout.numel, shape.nblk, layout.lo, layout.hi, layout.h_stride, layout.t_offset, layout.s_offset,
        layout.pair_inner, layout.width, layout.plane,
        PATTERN=layout.pattern, PARITY=layout.parity, SCALE=layout.scale_code, **scale_constants(layout),
        PAIRS=layout.pair_inner > 0, SHIFT_FIRST=layout.shift_first, REVERSE=layout.reverse,
        CT=compute_tl_dtype(x.dtype), BLOCK=shape.block, ROWS=shape.rows, num_warps=shape.num_warps,
    )  # fmt: skip
    if not layout.additive:
        sum_partials(partial, logdet)
    return y, logdet


def sum_partials(partial: torch.Tensor, logdet: torch.Tensor) -> None:
    """logdet[b] = the sum of partial[b, :] (one partial per block of the sample), in a fixed order."""
    batch, nblk = partial.shape
    if nblk == 1:
        logdet.copy_(partial.view(-1))
    else:
        block = min(1024, triton.next_power_of_2(nblk))
        _sum_partials_kernel[(batch,)](partial, logdet, nblk, BLOCK=block)
