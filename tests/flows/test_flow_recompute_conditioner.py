"""Couplings that recompute their conditioner in backward: the standard gradients, from the input alone."""

import pytest
import torch
from conftest import CPU_BACKENDS
from flows_helpers import parameters_after_steps, perturb, rel_err
from test_flow_layers import _bool_mask

from nf_kernels.flows import AdditiveCoupling, AffineCoupling, SplineCoupling, activation_memory, build_model
from nf_kernels.flows import memory_saving


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
        ("spline-bool-mask", (6,), lambda s, **o: SplineCoupling(s, mask=_bool_mask(s), hidden=8, bins=4,
                                                                  backend=backend, **o), False),
        ("additive-checkerboard", (1, 4, 4), lambda s, **o: AdditiveCoupling(
            s, mask="checkerboard", hidden=8, depth=1, backend=backend, **o), False),
    ]  # fmt: skip


CASE_NAMES = [c[0] for c in _couplings("reference")]


def _gradients(layer, x, context, weights):
    x = x.clone().requires_grad_(True)
    context = None if context is None else context.clone().requires_grad_(True)
    y, logdet = layer(x, context)
    loss = (y * weights[0]).sum() + (logdet * weights[1]).sum()  # non-uniform weights: every element counts
    wrt = [x, *layer.parameters()] + ([context] if context is not None else [])
    return (y.detach(), logdet.detach()), torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("index", range(len(CASE_NAMES)), ids=CASE_NAMES)
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


def test_without_gradients_no_node_is_made_and_the_numbers_are_the_same(monkeypatch):
    torch.manual_seed(0)
    layer = perturb(SplineCoupling((6,), hidden=8, recompute_conditioner=True))
    x = torch.randn(3, 6)
    y_node, logdet_node = layer(x)  # with autograd on: the recomputing node
    assert y_node.grad_fn is not None and "ConditionerRecomputed" in type(y_node.grad_fn).__name__

    def refuse(*args):
        raise AssertionError("a recomputing node was made without gradients")

    monkeypatch.setattr(memory_saving._ConditionerRecomputed, "apply", refuse)
    with torch.no_grad():
        y, logdet = layer(x)
    assert torch.equal(y, y_node) and torch.equal(logdet, logdet_node)
    assert torch.allclose(layer.inverse(y)[0], x, atol=1e-5)


def test_a_double_backward_is_refused_and_changed_weights_are_noticed():
    torch.manual_seed(0)
    layer = perturb(SplineCoupling((6,), hidden=8, recompute_conditioner=True))
    x = torch.randn(3, 6, requires_grad=True)
    y, logdet = layer(x)
    (grad_x,) = torch.autograd.grad(y.sum() + logdet.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(grad_x.sum(), x)
    y, logdet = layer(x)
    with torch.no_grad():
        layer.conditioner.net[0].weight.add_(1.0)  # an optimizer step between forward and backward
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (y.sum() + logdet.sum()).backward()


def test_functorch_transforms_take_the_standard_path(monkeypatch):
    """torch.func cannot run a Python autograd.Function without setup_context: under a transform the layer takes
    the standard path, and does what the layer without the option does (the op's own functorch support decides)."""
    torch.manual_seed(0)
    layer = perturb(AffineCoupling((6,), hidden=8, recompute_conditioner=True).double())
    x = torch.randn(3, 6, dtype=torch.float64)

    def outcome():
        try:
            return torch.func.grad(lambda v: layer(v)[1].sum())(x)
        except RuntimeError as error:
            return str(error)

    def refuse(*args):
        raise AssertionError("a recomputing node was made under a functorch transform")

    monkeypatch.setattr(memory_saving._ConditionerRecomputed, "apply", refuse)
    with_option = outcome()
    layer.recompute_conditioner = False
    without = outcome()
    if isinstance(without, str):
        assert with_option == without
    else:
        assert torch.equal(with_option, without)
