"""Every backend against the float64 reference: values, log-dets and gradients, over the whole matrix of
masks x flip x scales x shift_first x direction x dtypes (SPEC sections 1 and 3)."""

import pytest
import torch

from conftest import (
    CPU_BACKENDS,
    DTYPES,
    FUSED_CPU_BACKENDS,
    LOGDET_TOLERANCE,
    MASK_CASES,
    TOLERANCE,
    Coupling,
    all_couplings,
    rel_err,
)

CASES = all_couplings()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_float64_reference(case, backend):
    for seed, dtype in enumerate(DTYPES):  # fresh inputs for each dtype
        x, h = case.inputs(dtype, seed=seed)
        y, logdet = case(x, h, backend)
        y_ref, logdet_ref = case(x.double(), h.double(), "reference")
        assert y.dtype == x.dtype and y.shape == x.shape and y.is_contiguous()
        expected_logdet_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        assert logdet.dtype == expected_logdet_dtype and logdet.shape == (x.shape[0],)
        assert rel_err(y, y_ref) <= TOLERANCE[dtype], dtype
        assert rel_err(logdet, logdet_ref) <= LOGDET_TOLERANCE[dtype], dtype


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_gradients_match_reference(case, backend):
    for seed, dtype in enumerate([torch.float64, torch.float32]):
        x, h = case.inputs(dtype, seed=seed)
        g = torch.Generator().manual_seed(100 + seed)
        grad_y = torch.randn(x.shape, generator=g, dtype=torch.float64)
        grad_logdet = torch.randn(x.shape[0], generator=g, dtype=torch.float64)

        def grads(backend_name, x, h):
            x = x.detach().requires_grad_(True)
            h = h.detach().requires_grad_(True)
            y, logdet = case(x, h, backend_name)
            torch.autograd.backward((y, logdet), (grad_y.to(y.dtype), grad_logdet.to(logdet.dtype)))
            return x.grad, h.grad

        grad_x, grad_h = grads(backend, x, h)
        ref_x, ref_h = grads("reference", x.double(), h.double())
        assert grad_x.dtype == x.dtype and grad_h.dtype == h.dtype
        assert rel_err(grad_x, ref_x) <= TOLERANCE[dtype] * 10, dtype
        assert rel_err(grad_h, ref_h) <= TOLERANCE[dtype] * 10, dtype


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask", MASK_CASES, ids=str)
def test_half_precision_gradients(mask, dtype, backend):
    for case in (Coupling(mask, "tanh", reverse=False), Coupling(mask, "sigmoid", flip=True, reverse=True)):
        x, h = case.inputs(dtype)
        x.requires_grad_(True)
        h.requires_grad_(True)
        y, logdet = case(x, h, backend)
        (y.float().square().sum() + logdet.sum()).backward()
        xr, hr = x.detach().double().requires_grad_(True), h.detach().double().requires_grad_(True)
        yr, logdet_r = case(xr, hr, "reference")
        (yr.square().sum() + logdet_r.sum()).backward()
        assert rel_err(x.grad, xr.grad) <= 4 * TOLERANCE[dtype]
        assert rel_err(h.grad, hr.grad) <= 4 * TOLERANCE[dtype]


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
@pytest.mark.parametrize("case", all_couplings(MASK_CASES[1:4]), ids=str)
def test_multi_block_samples(case, backend, small_triton_blocks):
    """Samples spread over several programs: the two-stage log-det reduction and the block tails."""
    x, h = case.inputs(torch.float64)
    x.requires_grad_(True)
    h.requires_grad_(True)
    y, logdet = case(x, h, backend)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().add(logdet.sum()).backward()
    xr, hr = x.detach().clone().requires_grad_(True), h.detach().clone().requires_grad_(True)
    yr, logdet_r = case(xr, hr, "reference")
    (yr * torch.linspace(-1, 1, yr.numel(), dtype=yr.dtype).view_as(yr)).sum().add(logdet_r.sum()).backward()
    for out, ref in ((y, yr), (logdet, logdet_r), (x.grad, xr.grad), (h.grad, hr.grad)):
        assert rel_err(out, ref) <= 1e-12


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
def test_mixed_input_dtypes(backend):
    """Under autocast the conditioner's h comes in a lower precision than x; the result has x's dtype."""
    case = Coupling(MASK_CASES[1], "atan")
    for x_dtype, h_dtype in ((torch.float32, torch.bfloat16), (torch.float32, torch.float16), (torch.bfloat16, torch.float32)):
        x, h = case.inputs(x_dtype, h_dtype=h_dtype)
        y, logdet = case(x, h, backend)
        y_ref, logdet_ref = case(x.double(), h.double(), "reference")
        assert y.dtype == x_dtype
        assert rel_err(y, y_ref) <= TOLERANCE[x_dtype]
        assert rel_err(logdet, logdet_ref) <= 1e-5


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
@pytest.mark.parametrize(
    "x_dtype,h_dtype",
    [(torch.float64, torch.bfloat16), (torch.float64, torch.float16), (torch.float32, torch.bfloat16),
     (torch.bfloat16, torch.float64)],
    ids=str,
)
def test_mixed_input_dtypes_gradients(x_dtype, h_dtype, backend):
    """grad_h comes back in h's dtype, rounded from the compute type: also from float64 to a half type."""
    for case in (Coupling(MASK_CASES[1], "atan", flip=True), Coupling(MASK_CASES[2], "exp", reverse=True)):
        x, h = case.inputs(x_dtype, h_dtype=h_dtype)
        x.requires_grad_(True)
        h.requires_grad_(True)
        y, logdet = case(x, h, backend)
        (y.double().square().sum() + logdet.sum()).backward()
        xr, hr = x.detach().double().requires_grad_(True), h.detach().double().requires_grad_(True)
        yr, logdet_r = case(xr, hr, "reference")
        (yr.square().sum() + logdet_r.sum()).backward()
        assert x.grad.dtype == x_dtype and h.grad.dtype == h_dtype
        assert rel_err(x.grad, xr.grad) <= 4 * TOLERANCE[x_dtype]
        assert rel_err(h.grad, hr.grad) <= 4 * max(TOLERANCE[x_dtype], TOLERANCE[h_dtype])
