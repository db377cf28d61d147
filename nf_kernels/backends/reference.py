"""The "reference" backend: the SPEC written as plain PyTorch, for clarity rather than speed.

It is the oracle every other backend is tested against, so it shares no code with them: it builds the masks
with tensor ops, applies the formulas literally, and takes its gradient from autograd.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .._arguments import CouplingConfig, compute_dtype, logdet_dtype


def scale_map(s: torch.Tensor, scale: str, clamp: float) -> torch.Tensor:
    """log_scale = a(s_raw), the SPEC's table of scale parameterizations."""
    if scale == "exp":
        return s
    if scale == "tanh":
        return clamp * torch.tanh(s / clamp)
    if scale == "atan":
        return clamp * (2.0 / math.pi) * torch.atan(s / clamp)
    if scale == "sigmoid":
        return torch.nn.functional.logsigmoid(s + 2.0)
    raise ValueError(f"unknown scale {scale!r}")


def _transformed_elements(x: torch.Tensor, mask: Optional[torch.Tensor], config: CouplingConfig) -> torch.Tensor:
    """Bool tensor of shape x.shape[1:]: True where an element is transformed, False where it is kept."""
    if config.mask_kind == "checkerboard":
        height, width = x.shape[2], x.shape[3]
        i = torch.arange(height, device=x.device).view(height, 1)
        j = torch.arange(width, device=x.device).view(1, width)
        kept = (i + j) % 2 == (0 if config.flip else 1)
        return (~kept).expand(x.shape[1:])
    assert mask is not None
    kept = ~mask if config.flip else mask
    return ~kept


def _affine(x, s, t, config: CouplingConfig):
    """The coupling applied to transformed elements only; returns (out, log_scale)."""
    if config.additive:
        return (x - t if config.reverse else x + t), torch.zeros_like(x)
    a = scale_map(s, config.scale, config.clamp)
    if not config.reverse:
        out = (x + t) * torch.exp(a) if config.shift_first else x * torch.exp(a) + t
    else:
        out = x * torch.exp(-a) - t if config.shift_first else (x - t) * torch.exp(-a)
    return out, a


def _split_h(h: torch.Tensor, config: CouplingConfig):
    """(s_raw, t) along dim 1: scale first, then shift (RealNVP convention)."""
    if config.additive:
        return None, h
    half = h.shape[1] // 2
    return h[:, :half], h[:, half:]


def coupling(x: torch.Tensor, h: torch.Tensor, mask: Optional[torch.Tensor], config: CouplingConfig):
    """(y, logdet) by the SPEC's formulas, differentiable by autograd."""
    ct = compute_dtype(x.dtype)
    # Contiguous first, so that a strided input sums its log-det in the same order as its contiguous copy.
    xc, hc = x.to(ct).contiguous(), h.to(ct).contiguous()
    s, t = _split_h(hc, config)
    if config.mask_kind == "half":
        channels = x.shape[1]
        n_kept = channels // 2
        if config.flip:  # first C - C//2 transformed, last C//2 kept
            x_t, x_kept = xc[:, : channels - n_kept], xc[:, channels - n_kept :]
        else:
            x_kept, x_t = xc[:, :n_kept], xc[:, n_kept:]
        out_t, a = _affine(x_t, s, t, config)
        y = torch.cat([out_t, x_kept] if config.flip else [x_kept, out_t], dim=1)
        a_sum = a.flatten(1).sum(1)
    else:
        transformed = _transformed_elements(x, mask, config)
        out_t, a = _affine(xc, s, t, config)
        # torch.where, not multiplication by the mask: values at kept positions are ignored, even NaN or Inf.
        y = torch.where(transformed, out_t, xc)
        a_sum = torch.where(transformed, a, torch.zeros_like(a)).flatten(1).sum(1)
    logdet = -a_sum if config.reverse else a_sum
    return y.to(x.dtype).contiguous(), logdet.to(logdet_dtype(x.dtype))


class ReferenceBackend:
    name = "reference"

    def why_unavailable(self, device: torch.device) -> Optional[str]:
        return None  # plain PyTorch runs wherever PyTorch does

    def forward(self, x, h, mask, config):
        return coupling(x, h, mask, config)

    def backward(self, grad_y, grad_logdet, x, h, mask, config):
        # The oracle's gradient is autograd's gradient of the oracle's forward: nothing derived by hand.
        # torch.func.vjp, not torch.autograd.grad: a custom op's implementation runs below the autograd
        # dispatch key, where plain autograd records nothing.
        _, vjp = torch.func.vjp(lambda x_, h_: coupling(x_, h_, mask, config), x, h)
        y_dtype, logdet_dtype_ = x.dtype, logdet_dtype(x.dtype)
        grad_x, grad_h = vjp((grad_y.to(y_dtype), grad_logdet.to(logdet_dtype_)))
        return grad_x.contiguous(), grad_h.contiguous()


BACKEND = ReferenceBackend()
