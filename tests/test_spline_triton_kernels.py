"""The Triton spline kernels called directly (below the op layer), against a small float64 formula of nflows'
rational-quadratic spline written here, its autograd gradients, and finite differences of the kernels themselves.
Runs under the Triton interpreter (TRITON_INTERPRET=1); shapes stay small."""

from __future__ import annotations

import math
import os
from typing import NamedTuple, Optional

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402
if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
    pytest.skip("the Triton kernels run on CPU tensors only under TRITON_INTERPRET=1", allow_module_level=True)

from nf_kernels._layout import PATTERN_CHECKERBOARD, PATTERN_MASK, PATTERN_RANGE  # noqa: E402
from nf_kernels.backends.triton_kernels.spline_backward import launch_spline_backward  # noqa: E402
from nf_kernels.backends.triton_kernels.spline_forward import launch_spline_forward  # noqa: E402
from nf_kernels.backends.triton_kernels.spline_math import softplus  # noqa: E402


class Layout(NamedTuple):  # the fields the launchers read
    batch: int
    numel: int
    lo: int
    hi: int
    params_stride: int
    inner: int
    pattern: int
    parity: int
    width: int
    plane: int
    bins: int
    reverse: bool
    transformed: Optional[torch.Tensor]
    bound: float = 3.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3


def spline_formula(v, uw, uh, ud, config: Layout, inverse: bool):
    """nflows' unconstrained spline with linear tails, in float64 torch ops: v [M], u* [M, K] / [M, K - 1]."""
    bins, bound = uw.shape[-1], config.bound

    def knots(u, least):
        sizes = least + (1 - least * bins) * torch.softmax(u, -1)
        k = torch.nn.functional.pad(torch.cumsum(sizes, -1), (1, 0)) * 2 * bound - bound
        return torch.cat([torch.full_like(k[:, :1], -bound), k[:, 1:-1], torch.full_like(k[:, :1], bound)], -1)

    xk, yk = knots(uw, config.min_bin_width), knots(uh, config.min_bin_height)
    const = math.log(math.exp(1 - config.min_derivative) - 1)
    d = config.min_derivative + torch.nn.functional.softplus(torch.nn.functional.pad(ud, (1, 1), value=const))
    inside = (v >= -bound) & (v <= bound)
    outside_value = v
    v = v.clamp(-bound, bound)  # the spline branch only at points it is defined (no NaN in autograd's other branch)
    search = (yk if inverse else xk)[:, 1:-1]
    k = (v[:, None] >= search).sum(-1, keepdim=True)
    pick = lambda t: t.gather(-1, k)[:, 0]  # noqa: E731
    x0, w = pick(xk), pick(xk[:, 1:]) - pick(xk)
    y0, h = pick(yk), pick(yk[:, 1:]) - pick(yk)
    d0, d1 = pick(d), pick(d[:, 1:])
    s = h / w
    if inverse:
        dy = v - y0
        a = h * (s - d0) + dy * (d0 + d1 - 2 * s)
        b = h * d0 - dy * (d0 + d1 - 2 * s)
        c = -s * dy
        root = torch.sqrt(b * b - 4 * a * c)
        theta = torch.where(b >= 0, 2 * c / (-b - root), (root - b) / (2 * a))  # no cancellation (as the reference)
        out = x0 + theta * w
    else:
        theta = (v - x0) / w
    t1 = theta * (1 - theta)
    den = s + (d0 + d1 - 2 * s) * t1
    if not inverse:
        out = y0 + h * (s * theta**2 + d0 * t1) / den
    term = torch.log(s**2 * (d1 * theta**2 + 2 * s * t1 + d0 * (1 - theta) ** 2)) - 2 * torch.log(den)
    if inverse:
        term = -term
    return torch.where(inside, out, outside_value), torch.where(inside, term, torch.zeros_like(term))


def vector_case(batch, features, bins, reverse, flip=False):
    """A "half" coupling of [batch, features]: the last features - features // 2 (or the first, flipped)."""
    kept = features // 2
    transformed = features - kept
    lo, hi = (0, transformed) if flip else (kept, features)
    layout = Layout(batch, features, lo, hi, transformed * (3 * bins - 1), 1, PATTERN_RANGE, 0, 0, 0, bins, reverse,
                    None)  # fmt: skip
    return layout, [batch, features], [batch, transformed * (3 * bins - 1)]


def image_case(batch, channels, height, width, bins, reverse, pattern):
    numel = channels * height * width
    transformed = None
    if pattern == PATTERN_MASK:
        transformed = (torch.arange(numel) % 3 != 0).to(torch.uint8)
    layout = Layout(batch, numel, 0, numel, numel * (3 * bins - 1), height * width, pattern, 1, width,
                    height * width, bins, reverse, transformed)  # fmt: skip
    return layout, [batch, channels, height, width], [batch, channels * (3 * bins - 1), height, width]


def transformed_mask(layout: Layout) -> torch.Tensor:
    n = torch.arange(layout.numel)
    sel = (n >= layout.lo) & (n < layout.hi)
    if layout.pattern == PATTERN_CHECKERBOARD:
        r = n % layout.plane
        sel &= (r // layout.width + r % layout.width) % 2 == layout.parity
    elif layout.pattern == PATTERN_MASK:
        sel &= layout.transformed.bool()
    return sel


def per_element(params: torch.Tensor, layout: Layout):
    """params as [batch, hi - lo, P] (element, parameter), the layout's indexing done with torch views."""
    bins = layout.bins
    p = params.reshape(layout.batch, -1, 3 * bins - 1, layout.inner).transpose(2, 3)
    return p.reshape(layout.batch, layout.hi - layout.lo, 3 * bins - 1)


def expected(x, params, layout: Layout):
    """(y, logdet) by the formula, in float64."""
    x64, p = x.double().reshape(layout.batch, -1), per_element(params.double(), layout)
    bins = layout.bins
    part = x64[:, layout.lo : layout.hi].reshape(-1)
    p = p.reshape(-1, 3 * bins - 1)
    out, term = spline_formula(part, p[:, :bins], p[:, bins : 2 * bins], p[:, 2 * bins :], layout, layout.reverse)
    sel = transformed_mask(layout)[layout.lo : layout.hi].expand(layout.batch, -1)
    out = torch.where(sel.reshape(-1), out, part).reshape(layout.batch, -1)
    term = torch.where(sel.reshape(-1), term, torch.zeros_like(term)).reshape(layout.batch, -1)
    y = torch.cat([x64[:, : layout.lo], out, x64[:, layout.hi :]], 1).reshape(x.shape)
    return y, term.sum(1)


def inputs(x_shape, p_shape, dtype=torch.float64, seed=0, spread=2.0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(x_shape, generator=gen, dtype=torch.float64) * 8 - 4).to(dtype)  # some outside [-3, 3]
    params = (torch.randn(p_shape, generator=gen, dtype=torch.float64) * spread).to(dtype)
    return x, params


CASES = [
    ("vector", lambda bins, rev: vector_case(5, 7, bins, rev)),
    ("vector_flip", lambda bins, rev: vector_case(3, 4, bins, rev, flip=True)),
    ("checkerboard", lambda bins, rev: image_case(2, 2, 3, 4, bins, rev, PATTERN_CHECKERBOARD)),
    ("mask", lambda bins, rev: image_case(2, 3, 2, 3, bins, rev, PATTERN_MASK)),
]


@pytest.mark.parametrize("bins", [8, 5, 2, 1])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_forward_matches_the_formula(case, reverse, bins):
    layout, x_shape, p_shape = case[1](bins, reverse)
    if bins == 2:  # other constants too
        layout = layout._replace(bound=1.5, min_bin_width=0.1, min_bin_height=0.05, min_derivative=0.2)
    x, params = inputs(x_shape, p_shape)
    y, logdet = launch_spline_forward(x, params, layout)
    y_ref, logdet_ref = expected(x, params, layout)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_backward_matches_autograd_of_the_formula(case, reverse):
    bins = 6
    layout, x_shape, p_shape = case[1](bins, reverse)
    x, params = inputs(x_shape, p_shape, seed=1)
    gen = torch.Generator().manual_seed(2)
    grad_y = torch.randn(x_shape, generator=gen, dtype=torch.float64)
    grad_logdet = torch.randn(layout.batch, generator=gen, dtype=torch.float64)
    grad_x, grad_params = launch_spline_backward(grad_y, grad_logdet, x, params, layout)
    xr, pr = x.clone().requires_grad_(), params.clone().requires_grad_()
    y_ref, logdet_ref = expected(xr, pr, layout)
    gx_ref, gp_ref = torch.autograd.grad((y_ref * grad_y).sum() + (logdet_ref * grad_logdet).sum(), (xr, pr))
    torch.testing.assert_close(grad_x, gx_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grad_params, gp_ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_round_trip(dtype):
    layout, _, p_shape = vector_case(4, 6, 8, False)
    x, params = inputs([4, 6], p_shape, dtype=dtype)
    y, logdet = launch_spline_forward(x, params, layout)
    assert y.dtype == dtype and logdet.dtype == torch.float32
    y_ref, logdet_ref = expected(x, params, layout)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(logdet.double(), logdet_ref, rtol=tol, atol=tol)
    if dtype == torch.float32:
        # Compared where y lives: x itself is off by ulp(y) / (dy/dx), and dy/dx goes down to ~1e-3 here.
        back, logdet_back = launch_spline_forward(y, params, layout._replace(reverse=True))
        again, _ = launch_spline_forward(back, params, layout)
        torch.testing.assert_close(again, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logdet_back, -logdet, rtol=1e-4, atol=1e-4)


def test_inverse_of_forward_on_knots_edges_and_extreme_params():
    """x exactly on every knot, on +-bound, and parameters of +-30 (nearly empty bins, steep derivatives)."""
    bins, features = 4, 2 * 6
    layout, _, p_shape = vector_case(3, features, bins, False)
    x, params = inputs([3, features], p_shape, seed=3, spread=1.0)
    params[0] *= 30.0
    # sample 1: each element on one of its own interior knots (the formula's knots, in the same arithmetic)
    uw = per_element(params, layout)[1, :, :bins]
    knots = torch.cumsum(1e-3 + (1 - 1e-3 * bins) * torch.softmax(uw, -1), -1) * 6.0 - 3.0
    which = torch.arange(features // 2) % (bins - 1)
    x[1, features // 2 :] = knots.gather(1, which[:, None])[:, 0]
    x[2, features // 2 :] = torch.tensor([-3.0, 3.0, -3.0, 3.0, 0.0, 1e-300], dtype=torch.float64)
    y, logdet = launch_spline_forward(x, params, layout)
    y_ref, logdet_ref = expected(x, params, layout)
    torch.testing.assert_close(y, y_ref, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-10, atol=1e-10)
    back, logdet_back = launch_spline_forward(y, params, layout._replace(reverse=True))
    torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(logdet_back, -logdet, rtol=1e-9, atol=1e-9)


@triton.jit
def _softplus_kernel(u_ptr, out_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(out_ptr + i, softplus(tl.load(u_ptr + i)))


def test_softplus_near_zero_and_at_the_overflow_edge():
    """The knot derivatives' softplus, in float32 and float64: to rounding for tiny, large and very negative
    arguments (down to the smallest normal float32), and past float32's exp overflow (88.7)."""
    u64 = torch.tensor([0.0, 1e-8, -1e-8, 1e-3, 20.0, -20.0, -80.0, -87.0, 88.0, 89.0, 1e4, -1e4, 1e30, -1e30,
                        5.0, -5.0], dtype=torch.float64)  # fmt: skip
    for dtype, rtol in ((torch.float32, 2e-7), (torch.float64, 1e-15)):
        u = u64.to(dtype)
        out = torch.empty_like(u)
        _softplus_kernel[(1,)](u, out, BLOCK=16)
        ref = torch.nn.functional.softplus(u.double(), threshold=1e9)
        ref = torch.where(u.double() > 30, u.double() + torch.exp(-u.double()), ref)
        torch.testing.assert_close(out.double(), ref.to(dtype).double(), rtol=rtol, atol=0)


@pytest.mark.parametrize("reverse", [False, True])
def test_samples_over_several_programs(small_triton_blocks, reverse):
    """16-element programs: a sample of 36 elements spans three, so the log-det takes the two-stage sum."""
    from nf_kernels.backends.triton_kernels.launch import LaunchShape

    layout, x_shape, p_shape = image_case(3, 4, 3, 3, 4, reverse, PATTERN_CHECKERBOARD)
    assert LaunchShape.for_layout(layout, 8, 8).nblk == 3
    x, params = inputs(x_shape, p_shape, seed=4)
    y, logdet = launch_spline_forward(x, params, layout)
    y_ref, logdet_ref = expected(x, params, layout)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-12, atol=1e-12)
    grad_y, grad_logdet = torch.ones_like(x), torch.full((3,), 0.5, dtype=torch.float64)
    grad_x, grad_params = launch_spline_backward(grad_y, grad_logdet, x, params, layout)
    xr, pr = x.clone().requires_grad_(), params.clone().requires_grad_()
    y_ref, logdet_ref = expected(xr, pr, layout)
    gx_ref, gp_ref = torch.autograd.grad(y_ref.sum() + 0.5 * logdet_ref.sum(), (xr, pr))
    torch.testing.assert_close(grad_x, gx_ref, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grad_params, gp_ref, rtol=1e-9, atol=1e-10)


def test_a_sample_with_more_than_2_31_parameters_is_refused():
    """The kernels index a sample's parameters in 32 bits: the launcher says so before launching anything."""
    from nf_kernels.backends.triton_kernels.spline_forward import spline_launch

    layout, _, _ = vector_case(1, 2 * 2**27, 8, False)  # 2^27 transformed elements x 23 parameters > 2^31
    with pytest.raises(RuntimeError, match="32-bit"):
        spline_launch(layout, torch.empty(0), 4, 4)
    spline_launch(layout._replace(params_stride=2**31 - 1), torch.empty(0), 4, 4)


def test_gradients_at_the_bound_with_large_parameters():
    """x next to +-bound, parameters x10 (bins of the minimal size next to wide ones): the gradients of the sizes
    go with 1 / width there, and only nflows' form of them (the last knot a constant) keeps full precision. (At
    +-bound itself y is the bound and the log-det term 0 whatever the parameters. The inverse there is
    ill-conditioned in the formula itself, to ~5e-12.)"""
    layout, x_shape, p_shape = vector_case(4, 16, 8, False)
    x, params = inputs(x_shape, p_shape, seed=5, spread=10.0)
    x[:, 8:] = torch.tensor([-3.0 + 1e-4, 3.0 - 1e-4])[torch.randint(0, 2, (4, 8), generator=torch.Generator().manual_seed(6))].double()
    grad_y = torch.randn(x_shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grad_logdet = torch.randn(4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    grad_x, grad_params = launch_spline_backward(grad_y, grad_logdet, x, params, layout)
    xr, pr = x.clone().requires_grad_(), params.clone().requires_grad_()
    y_ref, logdet_ref = expected(xr, pr, layout)
    gx_ref, gp_ref = torch.autograd.grad((y_ref * grad_y).sum() + (logdet_ref * grad_logdet).sum(), (xr, pr))
    assert (grad_x - gx_ref).norm() <= 1e-12 * gx_ref.norm()
    assert (grad_params - gp_ref).norm() <= 1e-12 * gp_ref.norm()
