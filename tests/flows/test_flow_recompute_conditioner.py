"""Couplings that recompute their conditioner in backward: the standard gradients, from the input alone."""

import pytest
import torch
from conftest import CPU_BACKENDS
from flows_helpers import parameters_after_steps, perturb, rel_err
from test_flow_layers import _bool_mask

from nf_kernels.flows import AdditiveCoupling, AffineCoupling, SplineCoupling, activation_memory, build_model


def _couplings(backend):
    """Every coupling kind and mask kind, with and without a context, recomputing or not."""
    return [
        ("affine-half", (5,), lambda s, **o: AffineCoupling(s, hidden=8, backend=backend, **o), False),
        ("affine-checkerboard-flip-tanh", (1, 4, 4), lambda s, **o: AffineCoupling(
            s, mask="checkerboard", flip=True, scale="tanh", hidden=8, depth=1, backend=backend, **o), False),
        ("affine-bool-mask-context", (6,), lambda s, **o: AffineCoupling(
            s, mask=_bool_mask(s), hidden=8, context_features=3, backend=backend, **o), True),
        ("additive-half-flip", (5,), lambda s, **o: AdditiveCoupling(s, flip=True, hidden=8, backend=backend, **o),
         False),
        ("spline-half", (7,), lambda s, **o: SplineCoupling(s, hidden=8, bins=5, backend=backend, **o), False),
        ("spline-half-image-flip-context", (3, 2, 3), lambda s, **o: SplineCoupling(
            s, flip=True, hidden=8, depth=1, bins=3, bound=2.0, context_features=3, backend=backend, **o), True),
        ("spline-checkerboard", (1, 3, 4), lambda s, **o: SplineCoupling(
            s, mask="checkerboard", hidden=8, depth=1, backend=backend, **o), False),
    ]  # fmt: skip


def _gradients(layer, x, context, weights):
    x = x.clone().requires_grad_(True)
    context = None if context is None else context.clone().requires_grad_(True)
    y, logdet = layer(x, context)
    loss = (y * weights[0]).sum() + (logdet * weights[1]).sum()  # non-uniform weights: every element counts
    wrt = [x, *layer.parameters()] + ([context] if context is not None else [])
    return (y.detach(), logdet.detach()), torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("index", range(7), ids=[c[0] for c in _couplings("reference")])
def test_recomputing_gives_the_standard_outputs_and_gradients_in_float64(index, backend):
    name, shape, factory, with_context = _couplings(backend)[index]
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        layer = perturb(factory(shape, recompute_conditioner=recompute).double(), std=0.3)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(4, *shape, generator=g, dtype=torch.float64) * 1.5
        context = torch.randn(4, 3, generator=g, dtype=torch.float64) if with_context else None
        weights = (torch.randn(4, *shape, generator=g, dtype=torch.float64), torch.randn(4, generator=g).double())
        results.append(_gradients(layer, x, context, weights))
    (outputs, grads), (outputs_r, grads_r) = results
    assert torch.equal(outputs[0], outputs_r[0]) and torch.equal(outputs[1], outputs_r[1])
    assert len(grads) == len(grads_r)
    for g_standard, g_recomputed in zip(grads, grads_r):  # input, every parameter, the context
        assert g_standard.abs().sum() > 0
        assert rel_err(g_recomputed, g_standard) <= 1e-12


def test_recomputing_keeps_only_the_inputs_of_a_spline_flow():
    """An NSF whose couplings recompute keeps a small fraction of the standard step's activations."""
    x = torch.randn(64, 16)
    memory = {}
    for recompute in (False, True):
        torch.manual_seed(0)
        flow = build_model("nsf", (16,), num_steps=4, hidden=32, recompute_conditioner=recompute)
        memory[recompute] = activation_memory(flow, x)
    # Standard: per coupling the input, two hidden layers and the spline's parameters (23 values a transformed
    # element); recomputing: the input of each layer (ActNorm, 1x1 convolution, coupling) and little else. In
    # backward one coupling's conditioner graph is alive at a time (and the reference backend's own graph).
    assert memory[True].after_forward <= 0.25 * memory[False].after_forward
    assert memory[True].peak < memory[False].peak


def test_recomputing_is_the_standard_computation_without_gradients():
    torch.manual_seed(0)
    layer = perturb(SplineCoupling((6,), hidden=8, recompute_conditioner=True))
    x = torch.randn(3, 6)
    with torch.no_grad():
        y, logdet = layer(x)
    layer.recompute_conditioner = False
    y_standard, logdet_standard = layer(x)
    assert torch.equal(y, y_standard) and torch.equal(logdet, logdet_standard)
    assert torch.allclose(layer.inverse(y)[0], x, atol=1e-5)


def test_a_recomputing_model_trains_like_the_standard_one():
    """A few Adam steps of an NSF give the same parameters either way (the gradients reach .grad)."""
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        flow = build_model("nsf", (4,), num_steps=2, hidden=8, recompute_conditioner=recompute)
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
        results.append(parameters_after_steps(flow, x, torch.optim.Adam(flow.parameters(), lr=1e-2)))
    assert rel_err(results[1], results[0]) <= 1e-5


def test_recomputing_under_autocast_replays_the_forward_precision():
    torch.manual_seed(0)
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        layer = perturb(SplineCoupling((6,), hidden=8, recompute_conditioner=recompute))
        x = torch.randn(5, 6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, logdet = layer(x)
        results.append(torch.autograd.grad(y.sum() + logdet.sum(), list(layer.parameters())))
    for standard, recomputed in zip(*results):
        assert rel_err(recomputed, standard) <= 1e-6
