"""torch.func transforms (grad, jacrev, jvp, hessian, vmap) over the coupling ops and the flows, on every backend:
under a transform a call computes the reference formulas (nf_kernels._ops.under_function_transform), whose
derivatives must be the ones autograd gives the same call outside any transform."""

import pytest
import torch
from conftest import CPU_BACKENDS
from torch.func import grad, hessian, jacrev, jvp, vmap
from torch.nn.utils.stateless import _reparametrize_module

import nf_kernels
from nf_kernels import _ops
from nf_kernels._arguments import check_coupling_args
from nf_kernels._masks import kept_elements
from nf_kernels.backends.reference import reference_forward
from nf_kernels.flows import realnvp

BINS = 4


def _ops_of(backend):
    """name -> fn(x, h) -> (y, logdet) of each op, odd sizes: x [5, 7] with mask "half" (4 transformed features)."""
    return {
        "affine tanh": lambda x, h: nf_kernels.affine_coupling(x, h, scale="tanh", backend=backend),
        "affine exp flip": lambda x, h: nf_kernels.affine_coupling(x, h, flip=True, backend=backend),
        # s_raw beyond the bounds: pyro's gradient of 1 there, not autograd's 0 through a clamp.
        "affine clip": lambda x, h: nf_kernels.affine_coupling(x, 4 * h, scale="clip", clamp=0.3, backend=backend),
        "additive": lambda x, h: nf_kernels.additive_coupling(x, h[:, :4], backend=backend),
        "spline": lambda x, h: nf_kernels.spline_coupling(x, _spline_params(h), bins=BINS, backend=backend),
    }


def _spline_params(h):
    # 4 transformed features, 3 * BINS - 1 parameters each, from h's 8 values a sample (differentiable in h).
    return h.repeat(1, 6)[:, : 4 * (3 * BINS - 1)]


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    h = 0.5 * torch.randn(5, 8, generator=g, dtype=torch.float64)
    return x, h


CASES = [(backend, name) for backend in CPU_BACKENDS for name in _ops_of(backend)]


@pytest.mark.parametrize("backend,name", CASES, ids=[f"{b}-{n}" for b, n in CASES])
def test_grad_jacrev_and_jvp_are_autograds_derivatives(backend, name):
    op = _ops_of(backend)[name]
    x, h = _inputs()
    # grad of the log-det in x and h at once.
    gx, gh = grad(lambda x, h: op(x, h)[1].sum(), argnums=(0, 1))(x, h)
    xr, hr = x.clone().requires_grad_(), h.clone().requires_grad_()
    op(xr, hr)[1].sum().backward()
    torch.testing.assert_close(gx, xr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gh, hr.grad, rtol=1e-12, atol=1e-12)
    # The Jacobian of y in x, and a Jacobian-vector product with it.
    expected = torch.autograd.functional.jacobian(lambda x: op(x, h)[0], x)
    torch.testing.assert_close(jacrev(lambda x: op(x, h)[0])(x), expected, rtol=1e-12, atol=1e-12)
    v = torch.randn_like(x)
    _, tangent = jvp(lambda x: op(x, h)[0], (x,), (v,))
    torch.testing.assert_close(tangent, torch.einsum("bfcg,cg->bf", expected, v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_the_logdet_is_the_log_determinant_of_jacrevs_jacobian(backend):
    x, h = _inputs(1)
    for name, op in _ops_of(backend).items():
        jac = jacrev(lambda x: op(x, h)[0])(x)  # [5, 7, 5, 7]; samples are independent
        per_sample = torch.stack([jac[b, :, b, :] for b in range(x.shape[0])])
        sign, logabsdet = torch.linalg.slogdet(per_sample)
        assert (sign > 0).all(), name
        torch.testing.assert_close(logabsdet, op(x, h)[1], rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_hessian_and_vmap(backend):
    x, h = _inputs(2)
    op = _ops_of(backend)["affine tanh"]
    # A second derivative, which the ops refuse outside a transform: here the reference formulas', equal to
    # autograd's double backward through the same formulas called directly.
    hess = hessian(lambda x: op(x, h)[1].sum())(x)
    mask, config = check_coupling_args(x, h, mask="half", flip=False, reverse=False, backend=backend, additive=False,
                                       scale="tanh", clamp=2.0, shift_first=False, h_layout="scale_shift")  # fmt: skip
    expected = torch.autograd.functional.hessian(lambda x: reference_forward(x, h, mask, config)[1].sum(), x)
    torch.testing.assert_close(hess, expected, rtol=1e-12, atol=1e-12)
    # vmap over samples, each a batch of one.
    y, logdet = vmap(lambda xi, hi: tuple(t[0] for t in op(xi[None], hi[None])))(x, h)
    y_all, logdet_all = op(x, h)
    torch.testing.assert_close(y, y_all, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet, logdet_all, rtol=1e-12, atol=1e-12)


def test_a_call_under_a_transform_takes_the_reference_formulas(monkeypatch):
    calls = []
    reference, eager = _ops.reference_coupling, _ops.eager_coupling
    monkeypatch.setattr(_ops, "reference_coupling", lambda *a: calls.append("reference") or reference(*a))
    monkeypatch.setattr(_ops, "eager_coupling", lambda *a: calls.append("eager") or eager(*a))
    x, h = _inputs()
    grad(lambda x: nf_kernels.affine_coupling(x, h, backend=CPU_BACKENDS[-1])[1].sum())(x)
    nf_kernels.affine_coupling(x, h, backend=CPU_BACKENDS[-1])
    assert calls == ["reference", "eager"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_values_of_h_at_kept_positions_stay_out_of_the_gradients(backend):
    """The SPEC: h at kept positions is ignored, its gradient zero, even where it is inf or NaN."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 4, 5, generator=g, dtype=torch.float64)
    h = torch.randn(3, 4, 4, 5, generator=g, dtype=torch.float64)
    kept = kept_elements((2, 4, 5), "checkerboard", False)
    h[:, :2][:, kept] = float("inf")  # s_raw
    h[:, 2:][:, kept] = float("nan")  # t

    def loss(h):
        y, logdet = nf_kernels.affine_coupling(x, h, mask="checkerboard", backend=backend)
        return y.sum() + logdet.sum()

    found = grad(loss)(h)
    hr = h.clone().requires_grad_()
    loss(hr).backward()
    assert not found.isnan().any()
    torch.testing.assert_close(found, hr.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_batches_and_bad_backends_under_a_transform(backend):
    x, h = torch.zeros(0, 7, dtype=torch.float64), torch.zeros(0, 8, dtype=torch.float64)
    for name, op in _ops_of(backend).items():
        assert grad(lambda x: op(x, h)[1].sum())(x).shape == (0, 7), name
    # The backend's own errors (SPEC section 1), as without a transform.
    x, h = _inputs()
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        grad(lambda x: nf_kernels.affine_coupling(x, h, backend="cuda")[1].sum())(x)
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        grad(lambda x: nf_kernels.spline_coupling(x, _spline_params(h), bins=BINS, backend="cuda")[1].sum())(x)


@pytest.mark.parametrize("option", ["standard", "memory_saving", "recompute_conditioner"])
def test_a_flows_parameter_gradients_under_grad(option):
    torch.manual_seed(0)
    kwargs = {"standard": {}, "memory_saving": {"memory_saving": True},
              "recompute_conditioner": {"recompute_conditioner": True}}[option]  # fmt: skip
    model = realnvp((7,), num_layers=4, hidden=8, **kwargs).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # not the identity at init: every layer's gradient is nonzero
    x = torch.randn(9, 7, dtype=torch.float64)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(ps):
        with _reparametrize_module(model, ps):
            return -model.log_prob(x).mean()

    found = grad(loss)(params)
    model.zero_grad()
    (-model.log_prob(x).mean()).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(found[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
    # And the per-sample log-density's Jacobian in x, row b depending on sample b alone.
    jac = jacrev(model.log_prob)(x)
    assert jac.shape == (9, 9, 7)
    off_diagonal = ~torch.eye(9, dtype=torch.bool)
    assert torch.count_nonzero(jac[off_diagonal]) == 0 and torch.count_nonzero(jac[~off_diagonal]) > 0
