"""Mathematical properties of the spline coupling on every backend with spline kernels: gradcheck, the log-det
against slogdet of the Jacobian, invertibility, identity outside the bound, and the edge cases of SPEC section 1b."""

import dataclasses

import pytest
import torch

from conftest import MaskCase, gradcheck
from spline_cases import SPLINE_BACKENDS, SplineCase, all_spline_cases

# Small shapes: gradcheck and jacobian cost one evaluation per input element.
SMALL_CASES = [dataclasses.replace(case, bins=4) for case in all_spline_cases([
    MaskCase("half", (2, 5)),
    MaskCase("half", (2, 3, 2, 3)),
    MaskCase("checkerboard", (2, 2, 2, 3)),
    MaskCase("bool", (2, 7)),
])]  # fmt: skip


def _params(cases):
    return [pytest.param(case, backend, id=f"{case}-{backend}") for case in cases for backend in SPLINE_BACKENDS]


@pytest.mark.parametrize("case, backend", _params(SMALL_CASES))
def test_gradcheck_float64(case, backend):
    # "mixed": inputs inside and outside the bound (none on a knot or at +-bound, where differences jump).
    x, params = case.inputs(torch.float64, seed=1, kind="mixed")
    x.requires_grad_(True)
    params.requires_grad_(True)
    assert gradcheck(lambda x, p: case(x, p, backend), (x, params), backend, atol=1e-6)


@pytest.mark.parametrize("case, backend", _params(SMALL_CASES))
def test_logdet_equals_slogdet_of_jacobian(case, backend):
    x, params = case.inputs(torch.float64, seed=3, kind="mixed")
    sample_shape = x.shape[1:]
    for b in range(x.shape[0]):
        # params held fixed: in a layer they depend only on the kept elements, so the Jacobian is triangular.
        def one_sample(flat):
            y, _ = case(flat.view(1, *sample_shape), params[b : b + 1], backend)
            return y.reshape(-1)

        jacobian = torch.autograd.functional.jacobian(one_sample, x[b].reshape(-1))
        sign, logabsdet = torch.linalg.slogdet(jacobian)
        _, logdet = case(x[b : b + 1], params[b : b + 1], backend)
        assert sign.item() == 1.0
        torch.testing.assert_close(logdet[0], logabsdet, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 10.0])
@pytest.mark.parametrize("case, backend", _params([c for c in all_spline_cases() if not c.reverse]))
def test_inverse_undoes_forward(case, backend, scale):
    for kind in ("inside", "mixed", "knots", "edges"):
        x, params = case.inputs(torch.float64, seed=7, scale=scale, kind=kind)
        y, logdet = case(x, params, backend)
        x_back, logdet_back = dataclasses.replace(case, reverse=True)(y, params, backend)
        # Where a bin is nearly flat the inverse multiplies y's rounding error by the inverse slope.
        tolerance = 1e-12 if scale <= 1 else 1e-8
        torch.testing.assert_close(x_back, x, rtol=0, atol=tolerance)
        torch.testing.assert_close(logdet_back, -logdet, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
def test_float32_round_trip_of_ordinary_parameters(backend):
    case = SplineCase(MaskCase("half", (64, 16)), bins=8, bound=3.0)
    x, params = case.inputs(torch.float32, seed=2, kind="inside")
    y, logdet = case(x, params, backend)
    x_back, logdet_back = dataclasses.replace(case, reverse=True)(y, params, backend)
    assert (x_back - x).abs().median() < 1e-6 and (x_back - x).abs().max() < 1e-2
    torch.testing.assert_close(logdet_back, -logdet, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
def test_identity_outside_the_bound_and_at_its_ends(backend):
    case = SplineCase(MaskCase("half", (4, 12)), bound=2.0)
    _, params = case.inputs(torch.float64, scale=3.0)
    outside = torch.tensor([-7.0, -2.0000001, 2.0000001, 1e30, -torch.inf, torch.inf], dtype=torch.float64)
    ends = torch.tensor([-2.0, 2.0], dtype=torch.float64)
    for reverse in (False, True):
        spline = dataclasses.replace(case, reverse=reverse)
        x = outside.repeat(4, 2)
        y, logdet = spline(x, params, backend)
        assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(4, dtype=torch.float64))
        x = ends.repeat(4, 6)
        y, logdet = spline(x, params, backend)
        # The end knots are exact, so +-bound map onto themselves (the last bin's y_k + h_k to rounding), with
        # slope 1: log-det 0.
        torch.testing.assert_close(y, x, rtol=0, atol=1e-15)
        torch.testing.assert_close(logdet, torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-11)


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
def test_nan_input_passes_through_and_nan_params_poison(backend):
    case = SplineCase(MaskCase("half", (3, 6)))
    x, params = case.inputs(torch.float32, seed=1)
    x[0, 4] = torch.nan
    y, logdet = case(x, params, backend)
    assert torch.isnan(y[0, 4]) and not torch.isnan(y[1:]).any()
    params[1, 0] = torch.nan  # a width of element (1, 3)
    y, logdet = case(x, params, backend)
    assert torch.isnan(y[1, 3]) or torch.isnan(logdet[1]) or (x[1, 3].abs() > case.bound)
    assert not torch.isnan(y[2]).any() and not torch.isnan(logdet[2])


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
def test_values_of_params_at_kept_positions_are_ignored(backend):
    case = SplineCase(MaskCase("checkerboard", (2, 2, 3, 4)))
    x, params = case.inputs(torch.float64, seed=5, kind="mixed")
    kept = ~case.transformed(x.shape)
    spoiled = params.clone().view(2, 2, case.per_element, 3, 4)
    spoiled.masked_fill_(kept.unsqueeze(2).expand_as(spoiled), torch.nan)
    spoiled = spoiled.view_as(params).requires_grad_(True)
    y, logdet = case(x, spoiled, backend)
    y_ref, logdet_ref = case(x, params, backend)
    assert torch.equal(y, y_ref) and torch.equal(logdet, logdet_ref)
    (y.sum() + logdet.sum()).backward()
    grad = spoiled.grad.view(2, 2, case.per_element, 3, 4)
    assert torch.equal(grad[kept.unsqueeze(2).expand_as(grad)], torch.zeros(int(kept.sum()) * case.per_element,
                                                                               dtype=grad.dtype))  # fmt: skip


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
def test_empty_batch_and_sample_without_transformed_elements(backend):
    case = SplineCase(MaskCase("half", (0, 5)))
    x, params = case.inputs(torch.float32)
    x.requires_grad_(True)
    params.requires_grad_(True)
    y, logdet = case(x, params, backend)
    assert y.shape == (0, 5) and logdet.shape == (0,)
    (y.sum() + logdet.sum()).backward()
    assert x.grad.shape == x.shape and params.grad.shape == params.shape
    nothing = SplineCase(MaskCase("bool", (2, 4)))
    mask = torch.ones(4, dtype=torch.bool)  # everything kept
    x, params = nothing.inputs(torch.float32)
    y, logdet = nothing(x, params, backend, mask=mask)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
def test_logdet_is_bitwise_deterministic_and_outputs_never_alias(backend):
    case = SplineCase(MaskCase("half", (4, 2, 16, 16)), bins=8)
    x, params = case.inputs(torch.float32, seed=9, kind="mixed")
    first = case(x, params, backend)
    for _ in range(3):
        again = case(x, params, backend)
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].data_ptr() != x.data_ptr()
