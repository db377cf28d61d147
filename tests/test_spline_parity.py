"""The spline coupling against the peers' own splines (same parameters, same numbers): nflows'
`unconstrained_rational_quadratic_spline(tails="linear")`, whose parameterization the op takes as is, and zuko's
`MonotonicRQSTransform`, whose parameters map onto the op's (see `zuko_parameters`)."""

import math

import pytest
import torch

import nf_kernels
from spline_cases import SPLINE_BACKENDS

nflows_splines = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
zuko_transforms = pytest.importorskip("zuko.transforms")

BINS = 6


def _vector_inputs(seed, batch=16, features=5, bound=3.0, scale=1.0, dtype=torch.float64):
    """x of [batch, features] (a third of it beyond the bound) and its unconstrained parameters, nflows' split."""
    g = torch.Generator().manual_seed(seed)
    x = 1.3 * bound * (2 * torch.rand(batch, features, generator=g, dtype=torch.float64) - 1)
    params = scale * torch.randn(batch, features, 3 * BINS - 1, generator=g, dtype=torch.float64)
    return x.to(dtype), params.to(dtype)


def _ours(x, params, backend, reverse=False, **kwargs):
    """The op on every feature: a bool mask that keeps nothing, params flattened along dim 1 as the SPEC lays
    them out (feature c's parameter j at c * P + j)."""
    keep_nothing = torch.zeros(x.shape[1:], dtype=torch.bool)
    return nf_kernels.spline_coupling(x, params.flatten(1), mask=keep_nothing, bins=BINS, reverse=reverse,
                                      backend=backend, **kwargs)  # fmt: skip


def _nflows(x, params, inverse=False, bound=3.0, **kwargs):
    out, log_slopes = nflows_splines.unconstrained_rational_quadratic_spline(
        x, params[..., :BINS], params[..., BINS : 2 * BINS], params[..., 2 * BINS :], inverse=inverse,
        tails="linear", tail_bound=bound, **kwargs,
    )  # fmt: skip
    return out, log_slopes.sum(1)


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 4.0])
@pytest.mark.parametrize("reverse", [False, True])
def test_nflows_values_and_gradients(backend, scale, reverse):
    minimums = dict(min_bin_width=2e-3, min_bin_height=5e-3, min_derivative=1e-2)
    x, params = _vector_inputs(seed=int(10 * scale) + reverse, scale=scale)
    results = []
    for run in (lambda x, p: _ours(x, p, backend, reverse, bound=3.0, **minimums),
                lambda x, p: _nflows(x, p, inverse=reverse, bound=3.0, **minimums)):  # fmt: skip
        x_leaf, params_leaf = x.clone().requires_grad_(True), params.clone().requires_grad_(True)
        y, logdet = run(x_leaf, params_leaf)
        (y.sin().sum() + (logdet * torch.linspace(-1, 1, len(logdet), dtype=logdet.dtype)).sum()).backward()
        results.append((y, logdet, x_leaf.grad, params_leaf.grad))
    for ours, theirs, name in zip(*results, ("y", "logdet", "grad_x", "grad_params")):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10, msg=name)


def test_nflows_image_layout_is_the_ops_layout():
    """nflows' coupling reshapes its conditioner output [B, C_t * P, H, W] to [B, C_t, P, H, W] and moves P last:
    the op reads that same tensor in place."""
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    params = torch.randn(2, 2 * (3 * BINS - 1), 3, 5, generator=g, dtype=torch.float64)
    y, logdet = nf_kernels.spline_coupling(x, params, bins=BINS, backend="reference")
    per_element = params.view(2, 2, 3 * BINS - 1, 3, 5).permute(0, 1, 3, 4, 2)
    out, log_slopes = nflows_splines.unconstrained_rational_quadratic_spline(
        x[:, 2:], per_element[..., :BINS], per_element[..., BINS : 2 * BINS], per_element[..., 2 * BINS :],
        tails="linear", tail_bound=3.0,
    )  # fmt: skip
    torch.testing.assert_close(y[:, 2:], out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[:, :2], x[:, :2], rtol=0, atol=0)
    torch.testing.assert_close(logdet, log_slopes.flatten(1).sum(1), rtol=1e-12, atol=1e-12)


# zuko's map differs from nflows' in three places, all of them in how the unconstrained parameters become the
# spline: a soft clamp v / (1 + |2 v / log(slope)|) before the softmax of widths and heights (no minimal bin
# size: min_bin_width = min_bin_height = 0), derivatives exp(u / (1 + |u / log(slope)|)) (at least `slope`)
# instead of min_derivative + softplus(u), and its interval [-bound, bound] with bound = 5 by default.
# Mapping the parameters as below gives the same spline; what remains differs only at rounding level: zuko's end
# knots are bound * (2 * cumsum - 1), not exactly +-bound, and it counts x == -bound as outside (the same value,
# slope 1, either way).
ZUKO_MIN_DERIVATIVE = 1e-6  # below zuko's smallest derivative (its slope), so every zuko derivative is reachable


def zuko_parameters(widths, heights, derivatives, slope=1e-3):
    """The op's unconstrained parameters (widths, heights, derivatives) for zuko's, with min_bin_width =
    min_bin_height = 0 and min_derivative = ZUKO_MIN_DERIVATIVE."""
    log_slope = math.log(slope)
    widths = widths / (1 + (2 * widths / log_slope).abs())
    heights = heights / (1 + (2 * heights / log_slope).abs())
    d = torch.exp(derivatives / (1 + (derivatives / log_slope).abs()))
    # softplus^-1(d - min_derivative) = log(expm1(d - min_derivative))
    return widths, heights, torch.log(torch.expm1(d - ZUKO_MIN_DERIVATIVE))


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 4.0])
def test_zuko_values_and_log_dets_with_mapped_parameters(backend, scale):
    bound = 5.0
    x, raw = _vector_inputs(seed=3 + int(scale), bound=bound, scale=scale)
    widths, heights, derivatives = raw[..., :BINS], raw[..., BINS : 2 * BINS], raw[..., 2 * BINS :]
    transform = zuko_transforms.MonotonicRQSTransform(widths, heights, derivatives, bound=bound, slope=1e-3)
    y_zuko, ladj = transform.call_and_ladj(x)
    x_zuko = transform.inv(y_zuko)
    params = torch.cat(zuko_parameters(widths, heights, derivatives), dim=-1)
    options = dict(bound=bound, min_bin_width=0.0, min_bin_height=0.0, min_derivative=ZUKO_MIN_DERIVATIVE)
    y, logdet = _ours(x, params, backend, **options)
    x_back, logdet_back = _ours(y_zuko, params, backend, reverse=True, **options)
    torch.testing.assert_close(y, y_zuko, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logdet, ladj.sum(1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_back, x_zuko, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logdet_back, -ladj.sum(1), rtol=1e-9, atol=1e-9)
