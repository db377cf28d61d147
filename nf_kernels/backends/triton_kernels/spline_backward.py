"""Fused rational-quadratic spline coupling backward in Triton, both directions: reads grad_y, x, the parameters
and grad_logdet once, recomputes the element's bin in registers (spline_math.py) and writes grad_x and
grad_params once. Same grid as the spline forward; each element's gradient is local, so nothing is reduced.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..._outputs import new_output
from .indexing import program_tile, tile_touches_range, transformed_elements
from .launch import compute_tl_dtype
from .spline_forward import (
    BACKWARD_LEAST, BACKWARD_LEAST_BY_ROWS, load_spline_params, spline_constants, spline_launch, spline_mask_argument,
)  # fmt: skip
from .spline_math import derivative_grads, rq_grads, size_grads, spline_point
from .spline_params import store_grads_by_lanes, store_grads_by_rows


@triton.jit(do_not_specialize=["inner"])  # see indexing.spline_param_offsets
def _spline_backward_kernel(
    grad_y_ptr, grad_logdet_ptr, x_ptr, params_ptr, mask_ptr, grad_x_ptr, grad_params_ptr,
    B, N, nblk, lo, hi, params_stride, inner, W, PLANE,
    PATTERN: tl.constexpr, PARITY: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, BOUND: tl.constexpr,
    MIN_W: tl.constexpr, MIN_H: tl.constexpr, MIN_D: tl.constexpr, REVERSE: tl.constexpr, CT: tl.constexpr,
    GP_VIA: tl.constexpr, ALIGN: tl.constexpr, SPAN: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr,
):  # fmt: skip
    """grad_x and grad_params of a tile of ROWS samples by BLOCK elements (the forward's tiles).

    grad_y_ptr, x_ptr (the op's input: y when REVERSE), grad_x_ptr: [B, N]; grad_logdet_ptr: [B], CT; params_ptr,
    grad_params_ptr: [B, params_stride] as in the forward. Every parameter of every element in [lo, hi) is written,
    zeros for kept elements and those outside [-BOUND, BOUND], so every element of both outputs is written.
    """
    rows, n, in_bounds, blk = program_tile(B, N, nblk, BLOCK, ROWS)
    g = tl.load(grad_y_ptr + rows * N + n, mask=in_bounds, other=0.0).to(CT)
    if tile_touches_range(blk, lo, hi, BLOCK):
        in_range, sel, p, p_mask = transformed_elements(n, in_bounds, lo, hi, mask_ptr, W, PLANE, PATTERN, PARITY)
        x = tl.load(x_ptr + rows * N + n, mask=in_range, other=0.0).to(CT)
        uw, uh, ud, lane = load_spline_params(params_ptr, rows, p, p_mask, B, params_stride, inner, K, KP, ALIGN, SPAN,
                                              CT, ROWS, BLOCK)  # fmt: skip
        sample = tl.reshape(rows, [ROWS])
        g_logdet = tl.load(grad_logdet_ptr + sample, mask=sample < B, other=0.0).to(CT)[:, None]
        inside, theta, k, xk, w, yk, h, s, d0, d1, sw, sh, u0, u1 = spline_point(
            x, sel, uw, uh, ud, lane, K, BOUND, MIN_W, MIN_H, MIN_D, REVERSE
        )
        gx, g_left, g_width, g_bottom, g_height, g_d0, g_d1 = rq_grads(theta, w, h, s, d0, d1, g, g_logdet, REVERSE)
        grad_x = tl.where(inside, gx, g)
        g_uw = size_grads(sw, lane, k, g_left, g_width, K, MIN_W, BOUND)
        g_uh = size_grads(sh, lane, k, g_bottom, g_height, K, MIN_H, BOUND)
        g_ud = derivative_grads(lane, k, g_d0, g_d1, u0, u1, K)
        # Rounded to a half type through GP_VIA (float32), as backward.py rounds grad_h.
        gp_ty = grad_params_ptr.dtype.element_ty
        keep = inside[None, :, :]  # elsewhere the gradients are zero (whatever the unused numbers were)
        g_uw = tl.where(keep, g_uw, 0.0).to(GP_VIA).to(gp_ty)
        g_uh = tl.where(keep, g_uh, 0.0).to(GP_VIA).to(gp_ty)
        g_ud = tl.where(keep, g_ud, 0.0).to(GP_VIA).to(gp_ty)
        if SPAN > 0:
            store_grads_by_rows(grad_params_ptr, rows, lo, B, params_stride, g_uw, g_uh, g_ud, K, KP, SPAN, ROWS, BLOCK)
        else:
            store_grads_by_lanes(grad_params_ptr, rows, p, p_mask, params_stride, inner, g_uw, g_uh, g_ud, K, KP, ALIGN)
    else:
        grad_x = g
    tl.store(grad_x_ptr + rows * N + n, grad_x.to(grad_x_ptr.dtype.element_ty), mask=in_bounds)


def launch_spline_backward(
    grad_y: torch.Tensor, grad_logdet: torch.Tensor, x: torch.Tensor, params: torch.Tensor, layout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the spline backward on contiguous tensors (x: the op's input); returns (grad_x, grad_params)."""
    shape, align, span = spline_launch(layout, params, BACKWARD_LEAST, BACKWARD_LEAST_BY_ROWS)
    grad_x = new_output(x.shape, x.dtype, x.device)
    grad_params = new_output(params.shape, params.dtype, params.device)
    gp_via = tl.float32 if params.dtype in (torch.float16, torch.bfloat16) else compute_tl_dtype(x.dtype)
    _spline_backward_kernel[(shape.programs,)](
        grad_y, grad_logdet, x, params, spline_mask_argument(layout, x), grad_x, grad_params,
        layout.batch, layout.numel, shape.nblk, layout.lo, layout.hi, layout.params_stride, layout.inner,
        layout.width, layout.plane,
        PATTERN=layout.pattern, PARITY=layout.parity, **spline_constants(layout), REVERSE=layout.reverse,
        CT=compute_tl_dtype(x.dtype), GP_VIA=gp_via, ALIGN=align, SPAN=span, BLOCK=shape.block, ROWS=shape.rows, num_warps=shape.num_warps,
    )  # fmt: skip
    return grad_x, grad_params
