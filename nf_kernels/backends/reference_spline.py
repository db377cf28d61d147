"""The reference backend's spline coupling: SPEC section 1b written as plain PyTorch, for clarity, not speed.

Monotonic rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows") in nflows' parameterization
(`unconstrained_rational_quadratic_spline`, tails="linear"), computed for every element at once with N x K
tensors: the oracle the fused kernels are tested against. Its gradient is autograd through this same forward,
recomputed in the backward (the op saves only its input and params): one formula, so the two cannot disagree.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
from torch import Tensor

from .._arguments import compute_dtype, logdet_dtype
from .._spline_arguments import SplineConfig
from .reference_masks import half_join, half_split, transformed_elements


def _softmax(v: Tensor) -> Tensor:
    """Softmax along the last dim, written out: torch.softmax parallelizes over rows even for a few of them, and
    on a busy machine its threads' wake-ups cost milliseconds a call (gradcheck makes thousands)."""
    e = torch.exp(v - v.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def spline_knots(unnormalized: Tensor, minimum: float, bound: float) -> tuple[Tensor, Tensor]:
    """(knots, bin sizes) of one axis from K unconstrained values along the last dim: sizes
    ``minimum + (1 - minimum K) softmax``, knots their cumulative sum mapped onto [-bound, bound] with both ends
    exact, and the bin sizes the knots' differences (as nflows computes them, so both agree to the bit)."""
    bins = unnormalized.shape[-1]
    sizes = minimum + (1.0 - minimum * bins) * _softmax(unnormalized)
    interior = 2.0 * bound * torch.cumsum(sizes, dim=-1)[..., :-1] - bound
    ends = interior.new_full((*interior.shape[:-1], 1), bound)
    knots = torch.cat([-ends, interior, ends], dim=-1)
    return knots, knots[..., 1:] - knots[..., :-1]


def spline_derivatives(unnormalized: Tensor, min_derivative: float) -> Tensor:
    """The K + 1 derivatives at the knots: ``min_derivative + softplus`` inside, exactly 1 at both ends (nflows
    pads with the value whose map gives 1 up to rounding)."""
    one = unnormalized.new_ones((*unnormalized.shape[:-1], 1))
    return torch.cat([one, min_derivative + torch.nn.functional.softplus(unnormalized), one], dim=-1)


def rational_quadratic(v: Tensor, p: Tensor, config: SplineConfig) -> tuple[Tensor, Tensor]:
    """(out, log |d out / d v|) of the spline (its inverse when `config.reverse`) for every element of `v`, with
    its 3K - 1 unconstrained parameters along the last dim of `p` (shape ``v.shape + (P,)``). Identity, log 0,
    outside [-bound, bound]."""
    bins, bound = config.bins, config.bound
    xk, w = spline_knots(p[..., :bins], config.min_bin_width, bound)
    yk, h = spline_knots(p[..., bins : 2 * bins], config.min_bin_height, bound)
    d = spline_derivatives(p[..., 2 * bins :], config.min_derivative)
    inside = (v >= -bound) & (v <= bound)  # both ends included; NaN is outside, so it passes through
    # The spline is evaluated everywhere and picked by `inside`: clamping keeps its value (and the gradient that
    # torch.where sends to the unpicked branch) finite outside.
    u = v.clamp(-bound, bound).unsqueeze(-1)
    # Bin k: the last knot <= u, among k in [0, K - 1] (u == bound falls into the last bin).
    knots = yk if config.reverse else xk
    k = (knots[..., 1:-1] <= u).sum(-1, keepdim=True)

    def at(t: Tensor) -> Tensor:
        return t.gather(-1, k)

    x0, w_k, y0, h_k, d0, d1 = at(xk), at(w), at(yk), at(h), at(d), at(d[..., 1:])
    s = h_k / w_k
    curvature = d0 + d1 - 2.0 * s
    if not config.reverse:
        theta = (u - x0) / w_k
        out = y0 + h_k * (s * theta.square() + d0 * theta * (1.0 - theta)) / (s + curvature * theta * (1.0 - theta))
    else:  # theta in [0, 1] solves a theta^2 + b theta + c = 0
        dy = u - y0
        a = h_k * (s - d0) + dy * curvature
        b = h_k * d0 - dy * curvature
        c = -s * dy
        root = torch.sqrt((b.square() - 4.0 * a * c).clamp(min=0.0))  # the discriminant is >= 0 in exact arithmetic
        # The root is (-b + root) / (2a) = 2c / (-b - root). nflows always takes the second form, which cancels
        # when b < 0 (steep bins next to flat ones); the first does not then (and a > h s > 0 there). The forms
        # are picked before dividing, so the one not taken sends no inf * 0 = NaN into the gradient.
        positive = b >= 0
        theta = torch.where(positive, 2.0 * c, -b + root) / torch.where(positive, -b - root, 2.0 * a)
        out = x0 + theta * w_k
    one_minus = 1.0 - theta
    denominator = s + curvature * theta * one_minus
    slope = s.square() * (d1 * theta.square() + 2.0 * s * theta * one_minus + d0 * one_minus.square())
    log_slope = torch.log(slope) - 2.0 * torch.log(denominator)  # log dy/dx at theta
    if config.reverse:
        log_slope = -log_slope
    out, log_slope = out.squeeze(-1), log_slope.squeeze(-1)
    return torch.where(inside, out, v), torch.where(inside, log_slope, torch.zeros_like(log_slope))


def _per_element(params: Tensor, per_element: int) -> Tensor:
    """params [B, C' P, *r] as [B, C', *r, P]: parameter j of channel c is dim-1 index c P + j (SPEC layout)."""
    batch, channels = params.shape[0], params.shape[1] // per_element
    return params.view(batch, channels, per_element, *params.shape[2:]).movedim(2, -1)


def _spline(x: Tensor, params: Tensor, mask: Optional[Tensor], config: SplineConfig) -> tuple[Tensor, Tensor]:
    """(y, logdet) in the compute dtype, differentiable."""
    p = _per_element(params, config.params_per_element)
    if config.mask_kind == "half":
        x_kept, x_t = half_split(x, config)
        out, log_slope = rational_quadratic(x_t, p, config)
        y = half_join(x_kept, out, config)
    else:
        transformed = transformed_elements(x, mask, config)
        # Values at kept positions are ignored, even NaN or Inf (and get zero gradient).
        p = torch.where(transformed.unsqueeze(-1), p, torch.zeros_like(p))
        out, log_slope = rational_quadratic(x, p, config)
        y = torch.where(transformed, out, x)
        log_slope = torch.where(transformed, log_slope, torch.zeros_like(log_slope))
    return y, log_slope.flatten(1).sum(1)


def spline_forward(x: Tensor, params: Tensor, mask: Optional[Tensor], config: SplineConfig) -> tuple[Tensor, Tensor]:
    """(y, logdet) by the SPEC's formulas."""
    ct = compute_dtype(x.dtype)
    # Contiguous first, so that a strided input sums its log-det in the same order as its contiguous copy.
    y, logdet = _spline(x.to(ct).contiguous(), params.to(ct).contiguous(), mask, config)
    return y.to(x.dtype).contiguous(), logdet.to(logdet_dtype(x.dtype))


@contextlib.contextmanager
def _recording_autograd() -> Iterator[None]:
    """Autograd on inside a custom op's implementation, which runs below the autograd dispatch keys (so even
    under enable_grad nothing would be recorded): those keys are taken out of the thread's excluded set for the
    block, and put back after it."""
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.ADInplaceOrView):
        exclude = exclude.remove(key)
    with torch.enable_grad(), torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude):
        yield


def spline_backward(
    grad_y: Tensor, grad_logdet: Tensor, x: Tensor, params: Tensor, mask: Optional[Tensor], config: SplineConfig
) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_params) of :func:`spline_forward`: autograd through the forward, recomputed from x and params."""
    ct = compute_dtype(x.dtype)
    with _recording_autograd():
        x_leaf = x.detach().to(ct).contiguous().requires_grad_(True)
        params_leaf = params.detach().to(ct).contiguous().requires_grad_(True)
        y, logdet = _spline(x_leaf, params_leaf, mask, config)
        grad_x, grad_params = torch.autograd.grad(
            (y, logdet), (x_leaf, params_leaf), (grad_y.to(ct), grad_logdet.to(ct))
        )
    fresh = dict(memory_format=torch.contiguous_format, copy=True)
    return grad_x.to(x.dtype, **fresh), grad_params.to(params.dtype, **fresh)
