"""The ops inside PyTorch's machinery: opcheck, torch.compile(fullgraph=True), autocast, double backward."""

import pytest
import torch

import nf_kernels
from conftest import CLIP_BOUNDS, CPU_BACKENDS, TOLERANCE, Coupling, MaskCase, rel_err, with_backends

OPCHECK_CASES = [
    Coupling(MaskCase("half", (3, 7)), "tanh", reverse=True),
    Coupling(MaskCase("checkerboard", (2, 3, 5, 5)), "sigmoid", flip=True, shift_first=True),
    Coupling(MaskCase("bool", (2, 3, 4, 5)), "atan"),
    Coupling(MaskCase("half", (2, 5, 3, 3)), None, flip=True),
    Coupling(MaskCase("compact", (2, 5, 3, 3)), "clip", h_layout="shift_scale_pairs"),
    Coupling(MaskCase("half", (3, 6)), "nflows_sigmoid", reverse=True, h_layout="shift_scale"),
]


def _op_args(case: Coupling, backend: str, dtype=torch.float64):
    x, h = case.inputs(dtype)
    mask = case.mask.mask()
    _, _, kind = case.features
    clamp, clamp_low = (CLIP_BOUNDS[1], CLIP_BOUNDS[0]) if case.scale == "clip" else (case.clamp, 0.0)
    return (
        x.requires_grad_(True), h.requires_grad_(True), mask if isinstance(mask, torch.Tensor) else None, kind,
        case.flip, case.scale or "none", clamp, case.shift_first, case.reverse, case.h_layout, clamp_low, backend,
    )  # fmt: skip


@pytest.mark.parametrize("case, backend", with_backends(CPU_BACKENDS, OPCHECK_CASES))
def test_opcheck_coupling(case, backend):
    torch.library.opcheck(torch.ops.nf_kernels.coupling.default, _op_args(case, backend))


@pytest.mark.parametrize("case, backend", with_backends(CPU_BACKENDS, OPCHECK_CASES))
def test_opcheck_coupling_backward(case, backend):
    x, h, *rest = _op_args(case, backend)
    grad_y = torch.randn_like(x)
    grad_logdet = torch.randn(x.shape[0], dtype=torch.float64)
    args = (grad_y, grad_logdet, x.detach(), h.detach(), *rest)
    # The backward op is not differentiable again (see test_double_backward_is_a_clear_error).
    torch.library.opcheck(
        torch.ops.nf_kernels.coupling_backward.default, args, test_utils=("test_schema", "test_faketensor")
    )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_matches_eager(backend, dynamic):
    """A small flow step traced whole: coupling forward, inverse and backward, no graph break."""
    torch._dynamo.reset()

    def step(x, h):
        y, logdet = nf_kernels.affine_coupling(x, h, mask="checkerboard", scale="tanh", backend=backend)
        z, logdet2 = nf_kernels.additive_coupling(y, h[:, :3], mask="checkerboard", flip=True, backend=backend)
        x_back, _ = nf_kernels.affine_coupling(y, h, mask="checkerboard", scale="tanh", reverse=True, backend=backend)
        return z.square().sum() - (logdet + logdet2).sum() + x_back.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    results = []
    for fn in (step, compiled):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 5, 5, generator=g, requires_grad=True)
        h = torch.randn(2, 6, 5, 5, generator=g, requires_grad=True)
        loss = fn(x, h)
        loss.backward()
        results.append((loss, x.grad, h.grad))
    for eager, compiled_value in zip(*results):
        torch.testing.assert_close(compiled_value, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compile_fullgraph_with_a_layout_a_peer_map_and_a_compact_h(backend):
    """The new arguments are graph constants too, and a compact h's element count is checked inside the op (where
    the mask's values are read), so nothing breaks the graph."""
    torch._dynamo.reset()
    mask = torch.arange(7) % 3 == 0

    def step(x, h, t):
        y, logdet = nf_kernels.affine_coupling(x, h, mask="half", scale="clip", clamp=(-2.0, 1.0),
                                               h_layout="shift_scale_pairs", backend=backend)  # fmt: skip
        z, _ = nf_kernels.additive_coupling(y, t, mask=mask, backend=backend)
        return z.square().sum() - logdet.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 7, generator=g, requires_grad=True)
        h = torch.randn(3, 8, generator=g, requires_grad=True)
        t = torch.randn(3, 4, generator=g, requires_grad=True)  # compact: the 4 transformed features
        loss = fn(x, h, t)
        loss.backward()
        results.append((loss, x.grad, h.grad, t.grad))
    for eager, compiled_value in zip(*results):
        torch.testing.assert_close(compiled_value, eager, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_autocast_conditioner_output(backend):
    """Under autocast the conditioner returns bfloat16 h for float32 x: y stays float32, gradients flow."""
    torch.manual_seed(0)
    conditioner = torch.nn.Linear(3, 8)
    x = torch.randn(5, 7, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conditioner(x[:, :3])
        assert h.dtype == torch.bfloat16
        y, logdet = nf_kernels.affine_coupling(x, h, scale="atan", backend=backend)
    assert y.dtype == torch.float32 and logdet.dtype == torch.float32
    y_ref, logdet_ref = nf_kernels.affine_coupling(x.double(), h.double(), scale="atan", backend="reference")
    assert rel_err(y, y_ref) <= TOLERANCE[torch.float32]
    (y.sum() + logdet.sum()).backward()
    assert conditioner.weight.grad is not None and torch.isfinite(conditioner.weight.grad).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_double_backward_is_a_clear_error(backend):
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    y, logdet = nf_kernels.affine_coupling(x, h, scale="tanh", backend=backend)
    (grad_h,) = torch.autograd.grad(y.square().sum() + logdet.sum(), h, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        grad_h.sum().backward()
