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
from .indexing import block_indices, transformed_elements
from .launch import LaunchShape, compute_tl_dtype


@triton.jit
def _coupling_backward_kernel(
    grad_y_ptr, grad_logdet_ptr, x_ptr, h_ptr, mask_ptr, grad_x_ptr, grad_h_ptr,
    N, nblk, lo, hi, h_stride, t_offset, W, PLANE,
    PATTERN: tl.constexpr, PARITY: tl.constexpr, SCALE: tl.constexpr, CLAMP: tl.constexpr,
    SHIFT_FIRST: tl.constexpr, REVERSE: tl.constexpr, CT: tl.constexpr, GH_VIA: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    b, n, in_bounds = block_indices(N, nblk, BLOCK)
    in_range = in_bounds & (n >= lo) & (n < hi)
    sel = transformed_elements(n, in_range, mask_ptr, W, PLANE, PATTERN, PARITY)
    g = tl.load(grad_y_ptr + b * N + n, mask=in_bounds, other=0.0).to(CT)
    x = tl.load(x_ptr + b * N + n, mask=sel, other=0.0).to(CT)
    h_index = b * h_stride + (n - lo)
    t = tl.load(h_ptr + h_index + t_offset, mask=sel, other=0.0).to(CT)
    if SCALE != ADDITIVE:
        s = tl.load(h_ptr + h_index, mask=sel, other=0.0).to(CT)
        a = log_scale(s, SCALE, CLAMP)
        g_logdet = tl.load(grad_logdet_ptr + b).to(CT)
    else:
        s = tl.zeros_like(x)
        a = tl.zeros_like(x)
        g_logdet = 0.0
    gx, gt, ga = coupling_step_grad(g, g_logdet, x, a, t, SCALE, SHIFT_FIRST, REVERSE)
    tl.store(grad_x_ptr + b * N + n, tl.where(sel, gx, g).to(grad_x_ptr.dtype.element_ty), mask=in_bounds)
    # grad_h is written over the whole range, zeros at kept positions (checkerboard and bool masks). Rounded to
    # a half type through GH_VIA (float32), as the C++ and CUDA kernels do.
    gh_ty = grad_h_ptr.dtype.element_ty
    tl.store(grad_h_ptr + h_index + t_offset, tl.where(sel, gt, 0.0).to(GH_VIA).to(gh_ty), mask=in_range)
    if SCALE != ADDITIVE:
        gs = ga * log_scale_grad(s, SCALE, CLAMP)
        tl.store(grad_h_ptr + h_index, tl.where(sel, gs, 0.0).to(GH_VIA).to(gh_ty), mask=in_range)


def launch_backward(
    grad_y: torch.Tensor, grad_logdet: torch.Tensor, x: torch.Tensor, h: torch.Tensor, layout: FlatLayout
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward kernel on contiguous tensors; returns (grad_x, grad_h)."""
    shape = LaunchShape.for_numel(layout.numel)
    grad_x = new_output(x.shape, x.dtype, x.device)
    grad_h = new_output(h.shape, h.dtype, h.device)
    mask = layout.transformed if layout.transformed is not None else x  # dummy pointer when no mask is read
    # float64 -> bfloat16 directly is what the Triton interpreter gets wrong (it casts the value to the integer
    # storage type): half-type gradients are rounded from float32, as in csrc/.
    gh_via = tl.float32 if h.dtype in (torch.float16, torch.bfloat16) else compute_tl_dtype(x.dtype)
    _coupling_backward_kernel[(layout.batch * shape.nblk,)](
        grad_y, grad_logdet, x, h, mask, grad_x, grad_h,
        layout.numel, shape.nblk, layout.lo, layout.hi, layout.h_stride, layout.t_offset, layout.width, layout.plane,
        PATTERN=layout.pattern, PARITY=layout.parity, SCALE=layout.scale_code, CLAMP=layout.clamp,
        SHIFT_FIRST=layout.shift_first, REVERSE=layout.reverse, CT=compute_tl_dtype(x.dtype), GH_VIA=gh_via,
        BLOCK=shape.block,
        num_warps=shape.num_warps,
    )  # fmt: skip
    return grad_x, grad_h
