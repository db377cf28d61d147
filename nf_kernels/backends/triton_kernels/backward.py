"""Fused coupling backward in Triton, both directions: reads grad_y, x, h and grad_logdet once, writes grad_x
and grad_h once. Same grid as the forward; no reduction is needed, since each element's gradient is local
(the log-det gradient is one scalar per sample, broadcast to the sample's transformed elements).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._layout import FlatLayout
from ..._outputs import new_output
from .coupling_math import ADDITIVE, coupling_step_grad, log_scale, log_scale_grad
from .indexing import h_position, program_tile, tile_touches_range, transformed_elements
from .launch import LaunchShape, compute_tl_dtype, mask_argument, scale_constants


@triton.jit
def _coupling_backward_kernel(
    grad_y_ptr, grad_logdet_ptr, x_ptr, h_ptr, mask_ptr, grad_x_ptr, grad_h_ptr,
    B, N, nblk, lo, hi, h_stride, t_offset, s_offset, pair_inner, W, PLANE,
    PATTERN: tl.constexpr, PARITY: tl.constexpr, SCALE: tl.constexpr, CLAMP: tl.constexpr, INV_CLAMP: tl.constexpr,
    CLAMP_LOW: tl.constexpr, PAIRS: tl.constexpr,
    SHIFT_FIRST: tl.constexpr, REVERSE: tl.constexpr, CT: tl.constexpr, GH_VIA: tl.constexpr, BLOCK: tl.constexpr,
    ROWS: tl.constexpr,
):  # fmt: skip
    """grad_x and grad_h of a tile of ROWS samples by BLOCK elements (the forward's tiles).

    grad_y_ptr, x_ptr, grad_x_ptr: [B, N]; grad_logdet_ptr: [B], CT; h_ptr, grad_h_ptr: [B, h_stride] as in the
    forward. A tile wholly outside [lo, hi) only passes grad_y through to grad_x; the others write grad_h over all
    of [lo, hi) (zeros at kept positions), or for a compact h at every transformed element (which between them have
    every position of h), so every element of both outputs is written.
    """
    rows, n, in_bounds, blk = program_tile(B, N, nblk, BLOCK, ROWS)
    g = tl.load(grad_y_ptr + rows * N + n, mask=in_bounds, other=0.0).to(CT)
    if tile_touches_range(blk, lo, hi, BLOCK):
        in_range, sel, p, h_mask = transformed_elements(n, in_bounds, lo, hi, mask_ptr, W, PLANE, PATTERN, PARITY)
        x = tl.load(x_ptr + rows * N + n, mask=in_range, other=0.0).to(CT)
        h_at = h_ptr + rows * h_stride + h_position(p, pair_inner, PAIRS)
        t = tl.load(h_at + t_offset, mask=h_mask, other=0.0).to(CT)
        if SCALE != ADDITIVE:
            s = tl.load(h_at + s_offset, mask=h_mask, other=0.0).to(CT)
            a = log_scale(s, SCALE, CLAMP, INV_CLAMP, CLAMP_LOW)
            # The tile's ROWS log-det gradients as one contiguous vector (one wide load), then one a row.
            sample = tl.reshape(rows, [ROWS])
            g_logdet = tl.load(grad_logdet_ptr + sample, mask=sample < B, other=0.0).to(CT)[:, None]
        else:
            s = tl.zeros_like(x)
            a = tl.zeros_like(x)
            g_logdet = tl.zeros([ROWS, 1], dtype=CT)
        gx, gt, ga = coupling_step_grad(g, g_logdet, x, a, t, SCALE, SHIFT_FIRST, REVERSE)
        grad_x = tl.where(sel, gx, g)
        # Rounded to a half type through GH_VIA (float32), as the C++ and CUDA kernels do.
        gh_ty = grad_h_ptr.dtype.element_ty
        gh_at = grad_h_ptr + rows * h_stride + h_position(p, pair_inner, PAIRS)
        tl.store(gh_at + t_offset, tl.where(sel, gt, 0.0).to(GH_VIA).to(gh_ty), mask=h_mask)
        if SCALE != ADDITIVE:
            gs = ga * log_scale_grad(s, SCALE, CLAMP, INV_CLAMP)
            tl.store(gh_at + s_offset, tl.where(sel, gs, 0.0).to(GH_VIA).to(gh_ty), mask=h_mask)
    else:
        grad_x = g
    tl.store(grad_x_ptr + rows * N + n, grad_x.to(grad_x_ptr.dtype.element_ty), mask=in_bounds)


def launch_backward(
    grad_y: torch.Tensor, grad_logdet: torch.Tensor, x: torch.Tensor, h: torch.Tensor, layout: FlatLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward kernel on contiguous tensors; returns (grad_x, grad_h)."""
    shape = LaunchShape.for_layout(layout, x.element_size())
    grad_x = new_output(x.shape, x.dtype, x.device)
    grad_h = new_output(h.shape, h.dtype, h.device)
    mask = mask_argument(layout, x)
    # float64 -> bfloat16 directly is what the Triton interpreter gets wrong (it casts the value to the integer
    # storage type): half-type gradients are rounded from float32, as in csrc/.
    gh_via = tl.float32 if h.dtype in (torch.float16, torch.bfloat16) else compute_tl_dtype(x.dtype)
    _coupling_backward_kernel[(shape.programs,)](
        grad_y, grad_logdet, x, h, mask, grad_x, grad_h,
        layout.batch, layout.numel, shape.nblk, layout.lo, layout.hi, layout.h_stride, layout.t_offset, layout.s_offset,
        layout.pair_inner, layout.width, layout.plane,
        PATTERN=layout.pattern, PARITY=layout.parity, SCALE=layout.scale_code, **scale_constants(layout),
        PAIRS=layout.pair_inner > 0, SHIFT_FIRST=layout.shift_first, REVERSE=layout.reverse,
        CT=compute_tl_dtype(x.dtype), GH_VIA=gh_via,
        BLOCK=shape.block, ROWS=shape.rows, num_warps=shape.num_warps,
    )  # fmt: skip
    return grad_x, grad_h
