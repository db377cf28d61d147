"""Every backend against the float64 reference: values, log-dets and gradients, over the whole matrix of
masks x flip x scales x shift_first x direction x dtypes (SPEC sections 1 and 3)."""

import dataclasses
import itertools

import pytest
import torch

from conftest import (
    CPU_BACKENDS,
    DTYPES,
    FUSED_CPU_BACKENDS,
    H_LAYOUTS,
    MASK_CASES,
    SCALES,
    TOLERANCE,
    Coupling,
    MaskCase,
    all_couplings,
    assert_logdet_within_bound,
    rel_err,
    with_backends,
)

CASES = all_couplings()


def run_with_grads(case, x, h, backend, loss):
    """(y, logdet, grad_x, grad_h) of `case` on fresh leaf copies of x and h, after backward of loss(y, logdet)."""
    x = x.detach().clone().requires_grad_(True)
    h = h.detach().clone().requires_grad_(True)
    y, logdet = case(x, h, backend)
    loss(y, logdet).backward()
    return y, logdet, x.grad, h.grad


def square_loss(y, logdet):
    return y.double().square().sum() + logdet.sum()


@pytest.mark.parametrize("case, backend", with_backends(CPU_BACKENDS, CASES))
def test_forward_matches_float64_reference(case, backend):
    for seed, dtype in enumerate(DTYPES):  # fresh inputs for each dtype
        x, h = case.inputs(dtype, seed=seed)
        y, logdet = case(x, h, backend)
        y_ref, logdet_ref = case(x.double(), h.double(), "reference")
        assert y.dtype == x.dtype and y.shape == x.shape and y.is_contiguous()
        expected_logdet_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        assert logdet.dtype == expected_logdet_dtype and logdet.shape == (x.shape[0],)
        assert rel_err(y, y_ref) <= TOLERANCE[dtype], dtype
        assert_logdet_within_bound(logdet, logdet_ref, case.logdet_condition(h), dtype)


# Samples of 6400 elements (3200 transformed by "half"): long enough for cancellation to cost digits, and two
# Triton blocks per sample under the interpreter's default block size.
CANCELLING_MASKS = [MaskCase(name, (2, 4, 40, 40)) for name in ("half", "checkerboard", "bool", "compact")]
# Maps whose log-scales have one sign (or whose large values are clipped to bounds of one sign): nothing cancels.
ONE_SIGNED = ("sigmoid", "rsigmoid", "nflows_sigmoid", "clip")


def _cancelling_cases():
    return [Coupling(mask, scale, flip, h_layout=H_LAYOUTS[i % len(H_LAYOUTS)])
            for i, (scale, mask, flip) in enumerate(itertools.product(SCALES, CANCELLING_MASKS, (False, True)))]


@pytest.mark.parametrize("case, backend", with_backends(CPU_BACKENDS, _cancelling_cases()))
def test_logdet_error_is_bounded_by_the_condition_of_the_sum(case, backend):
    """Large log-scales that cancel to a near-zero log-det: its relative error is unbounded, but its error
    against sum_k |a_k| is (SPEC section 3)."""
    for seed, dtype in enumerate(DTYPES):
        case = dataclasses.replace(case, reverse=seed % 2 == 1)
        x, h = case.cancelling_inputs(dtype, seed=seed)
        _, logdet = case(x, h, backend)
        _, logdet_ref = case(x.double(), h.double(), "reference")
        condition = case.logdet_condition(h)
        if case.scale not in ONE_SIGNED:
            assert (logdet_ref.abs() < 0.05 * condition).all(), "the inputs should cancel"
        assert_logdet_within_bound(logdet, logdet_ref, condition, dtype)


@pytest.mark.parametrize("case, backend", with_backends(FUSED_CPU_BACKENDS, CASES))
def test_gradients_match_reference(case, backend):
    for seed, dtype in enumerate([torch.float64, torch.float32]):
        x, h = case.inputs(dtype, seed=seed)
        g = torch.Generator().manual_seed(100 + seed)
        grad_y = torch.randn(x.shape, generator=g, dtype=torch.float64)
        grad_logdet = torch.randn(x.shape[0], generator=g, dtype=torch.float64)

        def loss(y, logdet):
            return (y * grad_y.to(y.dtype)).sum() + (logdet * grad_logdet.to(logdet.dtype)).sum()

        *_, grad_x, grad_h = run_with_grads(case, x, h, backend, loss)
        *_, ref_x, ref_h = run_with_grads(case, x.double(), h.double(), "reference", loss)
        assert grad_x.dtype == x.dtype and grad_h.dtype == h.dtype
        assert rel_err(grad_x, ref_x) <= TOLERANCE[dtype] * 10, dtype
        assert rel_err(grad_h, ref_h) <= TOLERANCE[dtype] * 10, dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask, backend", [(c.mask, b) for c, b in
                                           (p.values for p in with_backends(FUSED_CPU_BACKENDS, map(Coupling, MASK_CASES)))])
def test_half_precision_gradients(mask, dtype, backend):
    for case in (Coupling(mask, "tanh", reverse=False), Coupling(mask, "sigmoid", flip=True, reverse=True)):
        x, h = case.inputs(dtype)
        *_, grad_x, grad_h = run_with_grads(case, x, h, backend, square_loss)
        *_, ref_x, ref_h = run_with_grads(case, x.double(), h.double(), "reference", square_loss)
        assert rel_err(grad_x, ref_x) <= 4 * TOLERANCE[dtype]
        assert rel_err(grad_h, ref_h) <= 4 * TOLERANCE[dtype]


@pytest.mark.parametrize("case, backend", with_backends(FUSED_CPU_BACKENDS, all_couplings(MASK_CASES[1:4] + MASK_CASES[6:])))
def test_multi_block_samples(case, backend, small_triton_blocks):
    """Samples spread over several programs: the two-stage log-det reduction and the block tails."""
    x, h = case.inputs(torch.float64)

    def loss(y, logdet):  # a different weight for every element, so a misplaced gradient shows
        return (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() + logdet.sum()

    fused = run_with_grads(case, x, h, backend, loss)
    reference = run_with_grads(case, x, h, "reference", loss)
    for out, ref in zip(fused, reference):
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
        *_, grad_x, grad_h = run_with_grads(case, x, h, backend, square_loss)
        *_, ref_x, ref_h = run_with_grads(case, x.double(), h.double(), "reference", square_loss)
        assert grad_x.dtype == x_dtype and grad_h.dtype == h_dtype
        assert rel_err(grad_x, ref_x) <= 4 * TOLERANCE[x_dtype]
        assert rel_err(grad_h, ref_h) <= 4 * max(TOLERANCE[x_dtype], TOLERANCE[h_dtype])


# Conditioner outputs of every magnitude a training run produces: ~1e-6 from zero-initialized last layers at the
# start, ordinary values, and large ones up to the edge where exp(80) still fits in float32.
MAGNITUDES = [1e-6, 1e-4, 1e-2, 1.0, 5.0, 80.0]
MAGNITUDE_MASKS = [MaskCase("half", (3, 37)), MaskCase("checkerboard", (2, 3, 6, 7)), MaskCase("compact", (2, 5, 3, 4))]


def _magnitude_cases():
    return [Coupling(mask, scale, h_layout=H_LAYOUTS[(i + j) % len(H_LAYOUTS)])
            for i, mask in enumerate(MAGNITUDE_MASKS) for j, scale in enumerate(SCALES)]  # fmt: skip


@pytest.mark.parametrize("magnitude", MAGNITUDES, ids=lambda m: f"s{m:g}")
@pytest.mark.parametrize("case, backend", with_backends(FUSED_CPU_BACKENDS, _magnitude_cases()))
def test_scale_maps_are_accurate_at_every_magnitude(case, backend, magnitude):
    """y, the log-det and both gradients against the float64 reference, with s_raw of one magnitude (random
    signs, between half of it and all of it), both directions, float32 and float64 (SPEC section 3). The loss is
    linear, so that at the overflow edge the gradients (of size exp(80)) still fit in float32."""
    for seed, (dtype, reverse) in enumerate(itertools.product([torch.float32, torch.float64], [False, True])):
        case = dataclasses.replace(case, flip=seed % 2 == 1, shift_first=seed >= 2, reverse=reverse)
        x, h = case.inputs(torch.float64, seed=seed)
        g = torch.Generator().manual_seed(50 + seed)
        s_shape = case.split(h)[0].shape
        sign = torch.randint(0, 2, s_shape, generator=g) * 2.0 - 1.0
        s = sign * magnitude * (0.5 + 0.5 * torch.rand(s_shape, generator=g, dtype=torch.float64))
        h = case.with_s(h, s)
        x, h = x.to(dtype), h.to(dtype)
        weights = torch.randn(x.shape, generator=g, dtype=torch.float64)

        def loss(y, logdet):
            return (y * weights.to(y.dtype)).sum() + logdet.sum()

        y, logdet, grad_x, grad_h = run_with_grads(case, x, h, backend, loss)
        ref = run_with_grads(case, x.double(), h.double(), "reference", loss)
        label = f"{dtype} reverse={reverse}"
        assert rel_err(y, ref[0]) <= TOLERANCE[dtype], label
        assert_logdet_within_bound(logdet, ref[1], case.logdet_condition(h), dtype)
        assert rel_err(grad_x, ref[2]) <= 10 * TOLERANCE[dtype], label
        assert rel_err(grad_h, ref[3]) <= 10 * TOLERANCE[dtype], label
