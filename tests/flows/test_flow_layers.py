"""Every layer: inverse(forward(x)) == x, and its log-det equals slogdet of the autograd Jacobian (float64)."""

import pytest
import torch
from flows_helpers import log_abs_det_jacobian, perturb

from nf_kernels.flows import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Invertible1x1Conv,
    MultiScaleSplit,
    RandomPermutation,
    ReversePermutation,
    Scaling,
    SplineCoupling,
    Squeeze,
)

CHECKER = torch.tensor([[True, False, True], [False, False, True]])  # an irregular bool mask for (2, 3) samples


def _bool_mask(shape):
    g = torch.Generator().manual_seed(1)
    return torch.rand(shape, generator=g) < 0.5


# (id, sample shape, factory); every factory builds a layer for that sample shape.
LAYERS = [
    ("affine-half-vector", (5,), lambda s: AffineCoupling(s, hidden=8)),
    ("affine-half-flip-tanh", (5,), lambda s: AffineCoupling(s, hidden=8, flip=True, scale="tanh", clamp=1.5)),
    ("affine-half-image-sigmoid-shift_first", (3, 2, 2),
     lambda s: AffineCoupling(s, hidden=8, depth=1, scale="sigmoid", shift_first=True)),
    ("affine-checkerboard-atan", (1, 3, 4), lambda s: AffineCoupling(s, mask="checkerboard", hidden=8, depth=1, scale="atan")),
    ("affine-checkerboard-flip", (2, 3, 3), lambda s: AffineCoupling(s, mask="checkerboard", flip=True, hidden=8, depth=1)),
    ("affine-bool-mask", (6,), lambda s: AffineCoupling(s, mask=_bool_mask(s), hidden=8)),
    ("additive-half", (4,), lambda s: AdditiveCoupling(s, hidden=8)),
    ("additive-checkerboard", (1, 4, 4), lambda s: AdditiveCoupling(s, mask="checkerboard", flip=True, hidden=8, depth=1)),
    ("spline-half-vector", (5,), lambda s: SplineCoupling(s, hidden=8, bins=4)),
    ("spline-half-image-flip", (3, 2, 2), lambda s: SplineCoupling(s, hidden=8, depth=1, flip=True, bins=3, bound=2.0)),
    ("spline-checkerboard", (1, 3, 4), lambda s: SplineCoupling(s, mask="checkerboard", hidden=8, depth=1)),
    ("spline-bool-mask", (6,), lambda s: SplineCoupling(s, mask=_bool_mask(s), hidden=8, bins=5)),
    ("scaling", (2, 3), lambda s: Scaling(s)),
    ("actnorm-vector", (4,), lambda s: ActNorm(4)),
    ("actnorm-image", (3, 2, 2), lambda s: ActNorm(3)),
    ("conv1x1-vector", (4,), lambda s: Invertible1x1Conv(4)),
    ("conv1x1-image", (3, 2, 3), lambda s: Invertible1x1Conv(3)),
    ("reverse-permutation", (5,), lambda s: ReversePermutation(5)),
    ("random-permutation", (3, 2, 2), lambda s: RandomPermutation(3, generator=torch.Generator().manual_seed(0))),
    ("squeeze", (1, 4, 2), lambda s: Squeeze(input_shape=s)),
    ("split", (4, 2, 2), lambda s: MultiScaleSplit(s, [AffineCoupling((2, 2, 2), hidden=8, depth=1), Squeeze()])),
]  # fmt: skip


def _layer(factory, shape):
    torch.manual_seed(0)
    layer = factory(shape).double()
    return perturb(layer, std=0.3)


@pytest.mark.parametrize("name,shape,factory", LAYERS, ids=[c[0] for c in LAYERS])
def test_round_trip_and_log_det_matches_jacobian(name, shape, factory):
    layer = _layer(factory, shape)
    x = torch.randn(3, *shape, dtype=torch.float64)
    y, logdet = layer(x)
    assert logdet.shape == (3,)
    x_back, inverse_logdet = layer.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(inverse_logdet, -logdet, rtol=1e-10, atol=1e-10)
    expected = log_abs_det_jacobian(lambda v: layer(v)[0], x)
    torch.testing.assert_close(logdet, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name,shape,factory", LAYERS, ids=[c[0] for c in LAYERS])
def test_repr_names_the_configuration(name, shape, factory):
    text = repr(factory(shape))
    assert type(factory(shape)).__name__ in text and "(" in text


def test_couplings_start_as_identity():
    x = torch.randn(4, 2, 4, 4)
    for layer in (AffineCoupling((2, 4, 4), hidden=8), AdditiveCoupling((2, 4, 4), mask="checkerboard", hidden=8)):
        y, logdet = layer(x)
        assert torch.equal(y, x) and torch.equal(logdet.abs(), torch.zeros(4))
    # A spline is the identity to rounding: equal bins and derivatives 1 (its conditioner's bias).
    for layer in (SplineCoupling((2, 4, 4), hidden=8), SplineCoupling((2, 4, 4), mask="checkerboard", hidden=8,
                                                                       min_derivative=0.1)):  # fmt: skip
        y, logdet = layer(x)
        torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
        torch.testing.assert_close(logdet, torch.zeros(4), rtol=0, atol=1e-5)


def test_conditioner_sees_only_kept_elements():
    """Changing transformed elements must not change h, or inverse would not undo forward."""
    layer = perturb(AffineCoupling((1, 4, 4), mask="checkerboard", hidden=8, depth=1), std=0.3)
    x = torch.randn(2, 1, 4, 4)
    transformed = ~layer._kept_mask
    x2 = x.clone()
    x2[:, transformed] += 5.0
    torch.testing.assert_close(layer._conditioner_output(x, None), layer._conditioner_output(x2, None))
    x2[:, transformed] = float("inf")  # not even a non-finite value leaks into h
    torch.testing.assert_close(layer._conditioner_output(x, None), layer._conditioner_output(x2, None))


def test_actnorm_initializes_from_the_first_batch_only():
    layer = ActNorm(3)
    x = torch.randn(256, 3, 2, 2) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 4.0
    y, _ = layer(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    before = layer.log_scale.detach().clone()
    layer(x * 10)
    assert torch.equal(layer.log_scale.detach(), before) and bool(layer.initialized)


def test_conv1x1_log_det_is_safe_for_large_images():
    """log|det| comes from the LU diagonal, never from det(W) (which overflows or underflows)."""
    layer = Invertible1x1Conv(4)
    with torch.no_grad():
        layer.log_s.fill_(30.0)
    _, logdet = layer(torch.zeros(1, 4, 64, 64))
    assert torch.isfinite(logdet).all()
    torch.testing.assert_close(logdet, torch.tensor([64 * 64 * 4 * 30.0]))


def test_actnorm_reads_a_loaded_initialization_flag():
    trained, fresh = ActNorm(2), ActNorm(2)
    trained(torch.randn(32, 2) * 4)
    fresh(torch.randn(32, 2))  # initialized on other data ...
    fresh.load_state_dict(ActNorm(2).state_dict())  # ... then loaded with an uninitialized state: must init again
    assert not bool(fresh.initialized)
    fresh(torch.randn(32, 2) * 4)
    assert bool(fresh.initialized)
    fresh.load_state_dict(trained.state_dict())
    before = fresh.log_scale.detach().clone()
    fresh(torch.randn(32, 2))  # loaded initialized: no re-init
    assert torch.equal(fresh.log_scale.detach(), before)
