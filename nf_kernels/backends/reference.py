"""The "reference" backend: the SPEC written as plain PyTorch, for clarity rather than speed.

It is the oracle every other backend is tested against, so it shares no code with them but the SPEC's mask table
(`nf_kernels._masks`): it builds the masks with tensor ops and applies the formulas literally. Its gradient is written out by hand too (autograd does not
record inside a custom op's implementation), and the tests hold that gradient to finite differences (gradcheck)
and to slogdet of the Jacobian. The spline coupling is `reference_spline.py`, its masks `reference_masks.py`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._arguments import FREIA_ATAN_FACTOR, NFLOWS_SCALE_FLOOR, CouplingConfig, compute_dtype, logdet_dtype
from .._masks import compact_transformed
from . import reference_spline
from .reference_masks import half_join, half_split, transformed_elements


class _ClipPassingGradients(torch.autograd.Function):
    """s clamped to [low, high], with pyro's gradient: 1 everywhere (the SPEC's "clip" row), where autograd through
    ``clamp`` would give 0 outside the bounds. The hand-written backward below never differentiates this forward;
    autograd and torch.func do, when a call under a transform takes these formulas (nf_kernels/_ops.py)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(s: Tensor, low: float, high: float) -> Tensor:
        return s.clamp(low, high)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None

    @staticmethod
    def jvp(ctx, tangent, _low, _high):
        return tangent


def scale_map(s: Tensor, scale: str, clamp: float, clamp_low: float = 0.0) -> Tensor:
    """log_scale = a(s_raw), the SPEC's table of scale parameterizations."""
    if scale == "exp":
        return s
    if scale == "tanh":
        return clamp * torch.tanh(s / clamp)
    if scale == "atan":
        return clamp * (2.0 / math.pi) * torch.atan(s / clamp)
    if scale == "sigmoid":
        return torch.nn.functional.logsigmoid(s + 2.0)
    if scale == "rsigmoid":  # normflows' "sigmoid": y = x / sigmoid(s + 2) + t
        return -torch.nn.functional.logsigmoid(s + 2.0)
    if scale == "nflows_sigmoid":
        return torch.log(torch.sigmoid(s + 2.0) + NFLOWS_SCALE_FLOOR)
    if scale == "softclamp":  # zuko's MonotonicAffineTransform, clamp = -log(slope)
        return s / (1.0 + s.abs() / clamp)
    if scale == "clip":  # pyro's clamp of the log-scale to [low, high]
        return _ClipPassingGradients.apply(s, clamp_low, clamp)
    if scale == "freia_atan":
        return clamp * FREIA_ATAN_FACTOR * torch.atan(s)
    if scale == "freia_tanh":
        return clamp * torch.tanh(s)
    if scale == "freia_sigmoid":  # FrEIA's 2 * (sigmoid(s) - 0.5), which is tanh(s / 2) without the cancellation
        return clamp * torch.tanh(s / 2.0)
    raise ValueError(f"unknown scale {scale!r}")


def scale_map_derivative(s: Tensor, scale: str, clamp: float) -> Tensor:
    """a'(s_raw); for "clip", pyro's convention: 1 everywhere (the gradient passes through the clamp)."""
    if scale in ("exp", "clip"):
        return torch.ones_like(s)
    if scale == "tanh":
        return 1.0 - torch.tanh(s / clamp) ** 2
    if scale == "atan":
        return (2.0 / math.pi) / (1.0 + (s / clamp) ** 2)
    if scale == "sigmoid":
        return torch.sigmoid(-(s + 2.0))  # d/dv log(sigmoid(v)) = 1 - sigmoid(v)
    if scale == "rsigmoid":
        return -torch.sigmoid(-(s + 2.0))
    if scale == "nflows_sigmoid":
        v = s + 2.0
        return torch.sigmoid(v) * torch.sigmoid(-v) / (torch.sigmoid(v) + NFLOWS_SCALE_FLOOR)
    if scale == "softclamp":
        return 1.0 / (1.0 + s.abs() / clamp) ** 2
    if scale == "freia_atan":
        return clamp * FREIA_ATAN_FACTOR / (1.0 + s**2)
    if scale == "freia_tanh":
        return clamp * (1.0 - torch.tanh(s) ** 2)
    if scale == "freia_sigmoid":
        return clamp * 0.5 * (1.0 - torch.tanh(s / 2.0) ** 2)
    raise ValueError(f"unknown scale {scale!r}")


# ---- parameters of h ----------------------------------------------------------------------------------------


def _split_h(h: Tensor, config: CouplingConfig) -> tuple[Optional[Tensor], Tensor]:
    """(s_raw, t) along dim 1 by the SPEC's h_layout table. Additive: (None, t)."""
    if config.additive:
        return None, h
    half = h.shape[1] // 2
    if config.h_layout == "scale_shift":
        return h[:, :half], h[:, half:]
    if config.h_layout == "shift_scale":
        return h[:, half:], h[:, :half]
    if config.h_layout == "shift_scale_pairs":  # channels (t, s_raw) of each transformed channel in turn
        return h[:, 1::2], h[:, 0::2]
    raise ValueError(f"unknown h_layout {config.h_layout!r}")


def _join_h(s: Optional[Tensor], t: Tensor, config: CouplingConfig) -> Tensor:
    """The inverse of :func:`_split_h`: h from its two parameters (gradients of them, in the backward)."""
    if s is None:
        return t
    if config.h_layout == "scale_shift":
        return torch.cat([s, t], dim=1)
    if config.h_layout == "shift_scale":
        return torch.cat([t, s], dim=1)
    return torch.stack([t, s], dim=2).flatten(1, 2)  # "shift_scale_pairs"


def _expand_compact(v: Tensor, transformed: Tensor) -> Tensor:
    """A compact parameter (one value per transformed element, in flat order) spread out to the sample's shape,
    zero at kept positions."""
    full = v.new_zeros((v.shape[0], transformed.numel()))
    full[:, transformed.reshape(-1)] = v.reshape(v.shape[0], -1)
    return full.view(v.shape[0], *transformed.shape)


def _parameters(h: Tensor, x: Tensor, mask: Optional[Tensor], config: CouplingConfig):
    """(s_raw, t) shaped like the transformed elements ("half") or like x (the other masks; compact ones spread)."""
    s, t = _split_h(h, config)
    if config.mask_kind == "compact":
        transformed = compact_transformed(x.shape[1:], mask, config.flip, h.shape, config.additive)
        transformed = transformed.view(x.shape[1:]).to(x.device)
        s = None if s is None else _expand_compact(s, transformed)
        t = _expand_compact(t, transformed)
    return s, t


# ---- forward ------------------------------------------------------------------------------------------------


def _step(x: Tensor, s: Optional[Tensor], t: Tensor, config: CouplingConfig) -> tuple[Tensor, Tensor]:
    """The coupling on every element as if transformed; returns (out, a(s_raw))."""
    if config.additive:
        return (x - t if config.reverse else x + t), torch.zeros_like(x)
    a = scale_map(s, config.scale, config.clamp, config.clamp_low)
    if not config.reverse:
        out = (x + t) * torch.exp(a) if config.shift_first else x * torch.exp(a) + t
    else:
        out = x * torch.exp(-a) - t if config.shift_first else (x - t) * torch.exp(-a)
    return out, a


def reference_forward(x: Tensor, h: Tensor, mask: Optional[Tensor], config: CouplingConfig) -> tuple[Tensor, Tensor]:
    """(y, logdet) by the SPEC's formulas."""
    ct = compute_dtype(x.dtype)
    # Contiguous first, so that a strided input sums its log-det in the same order as its contiguous copy.
    xc, hc = x.to(ct).contiguous(), h.to(ct).contiguous()
    s, t = _parameters(hc, x, mask, config)
    if config.mask_kind == "half":
        x_kept, x_t = half_split(xc, config)
        out_t, a = _step(x_t, s, t, config)
        y = half_join(x_kept, out_t, config)
    else:
        transformed = transformed_elements(x, mask, config)
        # Zero parameters at kept positions before the step: their outputs are dropped below, and with autograd
        # (torch.func takes these formulas) an inf or NaN there would still send 0 * inf = NaN into the gradients.
        s = None if s is None else torch.where(transformed, s, torch.zeros_like(s))
        t = torch.where(transformed, t, torch.zeros_like(t))
        out, a = _step(xc, s, t, config)
        # torch.where, not multiplication by the mask: values at kept positions are ignored, even NaN or Inf.
        y = torch.where(transformed, out, xc)
        a = torch.where(transformed, a, torch.zeros_like(a))
    a_sum = a.flatten(1).sum(1)
    logdet = -a_sum if config.reverse else a_sum
    # SPEC: y is contiguous. torch.where lays its result out like a strided (e.g. transposed) bool mask.
    return y.to(x.dtype).contiguous(), logdet.to(logdet_dtype(x.dtype))


# ---- backward -----------------------------------------------------------------------------------------------


def _step_grads(g, g_logdet, x, s, t, config: CouplingConfig):
    """Gradients (x, s_raw, t) of one transformed element, given the gradient g of its output and the
    sample's log-det gradient. Forward is out = u * exp(a) (+ t), u = x or x + t; the inverse mirrors it."""
    if config.additive:
        return g, None, (-g if config.reverse else g)
    a = scale_map(s, config.scale, config.clamp, config.clamp_low)
    if not config.reverse:
        e = torch.exp(a)
        if config.shift_first:  # out = (x + t) e
            grad_x, grad_t, grad_a = g * e, g * e, g * (x + t) * e + g_logdet
        else:  # out = x e + t
            grad_x, grad_t, grad_a = g * e, g, g * x * e + g_logdet
    else:
        e = torch.exp(-a)  # logdet = -sum a
        if config.shift_first:  # out = x e - t
            grad_x, grad_t, grad_a = g * e, -g, -g * x * e - g_logdet
        else:  # out = (x - t) e
            grad_x, grad_t, grad_a = g * e, -g * e, -g * (x - t) * e - g_logdet
    return grad_x, grad_a * scale_map_derivative(s, config.scale, config.clamp), grad_t


def reference_backward(grad_y, grad_logdet, x, h, mask, config: CouplingConfig) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_h) of :func:`reference_forward`, zero at the kept positions of grad_h."""
    ct = compute_dtype(x.dtype)
    xc, hc, g = x.to(ct).contiguous(), h.to(ct).contiguous(), grad_y.to(ct).contiguous()
    g_logdet = grad_logdet.to(ct).view(-1, *([1] * (x.dim() - 1)))
    s, t = _parameters(hc, x, mask, config)
    if config.mask_kind == "half":
        g_kept, g_t = half_split(g, config)
        x_kept, x_t = half_split(xc, config)
        grad_x_t, grad_s, grad_t = _step_grads(g_t, g_logdet, x_t, s, t, config)
        grad_x = half_join(g_kept, grad_x_t, config)
    else:
        transformed = transformed_elements(x, mask, config)
        zero = torch.zeros_like(xc)
        grad_x_t, grad_s, grad_t = _step_grads(g, g_logdet, xc, s, t, config)
        grad_x = torch.where(transformed, grad_x_t, g)
        grad_t = torch.where(transformed, grad_t, zero)
        grad_s = None if grad_s is None else torch.where(transformed, grad_s, zero)
    if config.mask_kind == "compact":  # back to one value per transformed element, in h's shape
        selected = transformed.reshape(-1)
        grad_t = grad_t.reshape(x.shape[0], -1)[:, selected]
        grad_s = None if grad_s is None else grad_s.reshape(x.shape[0], -1)[:, selected]
        half = (h.shape[0], h.shape[1] if config.additive else h.shape[1] // 2, *h.shape[2:])
        grad_t = grad_t.view(half)
        grad_s = None if grad_s is None else grad_s.view(half)
    grad_h = _join_h(grad_s, grad_t, config)
    # Fresh contiguous tensors: grad_t can be a view of grad_y, and an op's outputs must not alias its inputs.
    fresh = dict(memory_format=torch.contiguous_format, copy=True)
    return grad_x.to(x.dtype, **fresh), grad_h.to(h.dtype, **fresh)


class ReferenceBackend:
    name = "reference"
    eager_coupling = None  # eager calls take the custom op too
    eager_mlp_coupling = None

    def why_unavailable(self, device: torch.device) -> Optional[str]:
        return None  # plain PyTorch runs wherever PyTorch does

    def why_unsupported(self, scale, h_layout, mask_kind):
        return None  # the oracle computes everything the SPEC defines

    def forward(self, x, h, mask, config):
        return reference_forward(x, h, mask, config)

    def backward(self, grad_y, grad_logdet, x, h, mask, config):
        return reference_backward(grad_y, grad_logdet, x, h, mask, config)

    def spline_forward(self, x, params, mask, config):
        return reference_spline.spline_forward(x, params, mask, config)

    def spline_backward(self, grad_y, grad_logdet, x, params, mask, config):
        return reference_spline.spline_backward(grad_y, grad_logdet, x, params, mask, config)


BACKEND = ReferenceBackend()
