"""The spline coupling inside PyTorch's machinery: opcheck, torch.compile(fullgraph=True), autocast, double
backward (as tests/test_coupling_integration.py does for the affine op)."""

import pytest
import torch

import nf_kernels
from conftest import TOLERANCE, MaskCase, rel_err
from spline_cases import SPLINE_BACKENDS, SplineCase

OPCHECK_CASES = [
    SplineCase(MaskCase("half", (3, 7)), reverse=True),
    SplineCase(MaskCase("checkerboard", (2, 3, 4, 5)), flip=True),
    SplineCase(MaskCase("bool", (2, 3, 4, 5)), bins=2),
]


def _op_args(case: SplineCase, backend: str):
    x, params = case.inputs(torch.float64, kind="mixed")
    mask = case.mask.mask()
    return (x.requires_grad_(True), params.requires_grad_(True), mask if isinstance(mask, torch.Tensor) else None,
            *case.config(), backend)  # fmt: skip


def _params(cases):
    return [pytest.param(case, backend, id=f"{case}-{backend}") for case in cases for backend in SPLINE_BACKENDS]


@pytest.mark.parametrize("case, backend", _params(OPCHECK_CASES))
def test_opcheck_spline_coupling(case, backend):
    torch.library.opcheck(torch.ops.nf_kernels.spline_coupling.default, _op_args(case, backend))


@pytest.mark.parametrize("case, backend", _params(OPCHECK_CASES))
def test_opcheck_spline_coupling_backward(case, backend):
    x, params, *rest = _op_args(case, backend)
    args = (torch.randn_like(x), torch.randn(x.shape[0], dtype=torch.float64), x.detach(), params.detach(), *rest)
    torch.library.opcheck(
        torch.ops.nf_kernels.spline_coupling_backward.default, args, test_utils=("test_schema", "test_faketensor")
    )


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_matches_eager(backend, dynamic):
    """Forward, inverse and backward of the op traced whole: no graph break."""
    torch._dynamo.reset()

    def step(x, params):
        y, logdet = nf_kernels.spline_coupling(x, params, mask="checkerboard", bins=4, backend=backend)
        x_back, logdet_back = nf_kernels.spline_coupling(y, params, mask="checkerboard", bins=4, reverse=True,
                                                         backend=backend)  # fmt: skip
        return y.square().sum() - logdet.sum() + x_back.sum() + logdet_back.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    results = []
    for fn in (step, compiled):
        g = torch.Generator().manual_seed(0)
        x = (3 * torch.randn(2, 3, 5, 5, generator=g)).requires_grad_(True)
        params = torch.randn(2, 33, 5, 5, generator=g, requires_grad=True)
        loss = fn(x, params)
        loss.backward()
        results.append((loss, x.grad, params.grad))
    for eager, compiled_value in zip(*results):
        torch.testing.assert_close(compiled_value, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
def test_autocast_conditioner_output(backend):
    """Under autocast the conditioner returns bfloat16 params for float32 x: y stays float32, gradients flow."""
    torch.manual_seed(0)
    conditioner = torch.nn.Linear(3, 4 * 23)
    x = torch.randn(5, 7, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        params = conditioner(x[:, :3])
        assert params.dtype == torch.bfloat16
        y, logdet = nf_kernels.spline_coupling(x, params, backend=backend)
    assert y.dtype == torch.float32 and logdet.dtype == torch.float32
    y_ref, _ = nf_kernels.spline_coupling(x.double(), params.double(), backend="reference")
    assert rel_err(y, y_ref) <= TOLERANCE[torch.float32]
    (y.sum() + logdet.sum()).backward()
    assert conditioner.weight.grad is not None and torch.isfinite(conditioner.weight.grad).all()


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
def test_double_backward_is_a_clear_error(backend):
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    params = torch.randn(2, 2 * 23, dtype=torch.float64, requires_grad=True)
    y, logdet = nf_kernels.spline_coupling(x, params, backend=backend)
    (grad_params,) = torch.autograd.grad(y.square().sum() + logdet.sum(), params, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        grad_params.sum().backward()
