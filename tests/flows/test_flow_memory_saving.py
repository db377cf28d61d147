"""Memory-saving backprop: the same gradients as the standard path, from far less activation memory."""

import pytest
import torch
from conftest import CPU_BACKENDS
from flows_helpers import IMAGE_SHAPE, VECTOR_SHAPE, parameters_after_steps, perturb, rel_err, tiny_model
from test_flow_layers import LAYERS, _bool_mask

from nf_kernels.flows import MODELS, AdditiveCoupling, AffineCoupling, activation_memory, build_model, coupling
from nf_kernels.flows.flow import forward_layers


def _gradients(flow, x, context, memory_saving):
    flow.memory_saving = memory_saving
    x = x.clone().requires_grad_(True)
    loss = -flow.log_prob(x, context).mean()
    params = [p for p in flow.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [x, *params])
    return loss.detach(), grads


@pytest.mark.parametrize("conditional", [False, True], ids=["unconditional", "class-conditional"])
@pytest.mark.parametrize("shape", [VECTOR_SHAPE, IMAGE_SHAPE], ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_memory_saving_gradients_equal_the_standard_ones(name, shape, conditional):
    flow = tiny_model(name, shape, num_classes=3 if conditional else None, num_layers=3, num_steps=2)
    x = torch.rand(4, *shape)
    context = torch.tensor([0, 1, 2, 1]) if conditional else None
    loss, standard = _gradients(flow, x, context, memory_saving=False)
    loss_ms, saving = _gradients(flow, x, context, memory_saving=True)
    assert torch.equal(loss, loss_ms)
    # The memory-saving path rebuilds each layer's input by inversion; a spline's inverse multiplies float32
    # rounding by the inverse slope where a bin is flat (in float64 both paths agree to 1e-13).
    tolerance = 1e-4 if name == "nsf" else 1e-5
    for g_standard, g_saving in zip(standard, saving):  # input, then every parameter (embedding included)
        assert rel_err(g_saving, g_standard) <= tolerance


def test_memory_saving_honours_the_log_det_gradient():
    """A loss of the log-det alone: only the log-det path carries gradient."""
    flow = tiny_model("realnvp", VECTOR_SHAPE)
    x = torch.randn(5, *VECTOR_SHAPE)
    grads = []
    for memory_saving in (False, True):
        flow.memory_saving = memory_saving
        _, logdet = flow(x)
        grads.append(torch.autograd.grad(logdet.sum(), list(flow.parameters())))
    for a, b in zip(*grads):
        assert rel_err(b, a) <= 1e-5
    assert any(g.abs().sum() > 0 for g in grads[0])


def test_memory_saving_is_a_model_switch_that_reaches_nested_scales():
    flow = build_model("realnvp", IMAGE_SHAPE, memory_saving=True, num_scales=2, num_steps=1, hidden=8, depth=1)
    nested = [m for m in flow.modules() if hasattr(m, "memory_saving")]
    assert len(nested) >= 2 and all(m.memory_saving for m in nested)
    flow.memory_saving = False
    assert not any(m.memory_saving for m in nested)


def test_memory_saving_trains_like_the_standard_path():
    """A few optimizer steps give the same parameters (the gradients land in .grad as usual)."""
    results = []
    for memory_saving in (False, True):
        flow = tiny_model("glow", IMAGE_SHAPE)
        flow.train()
        flow.memory_saving = memory_saving
        x = torch.rand(8, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0))
        results.append(parameters_after_steps(flow, x, torch.optim.SGD(flow.parameters(), lr=1e-2)))
    assert rel_err(results[1], results[0]) <= 1e-5


def test_activation_memory_is_at_most_30_percent_of_the_standard_path():
    torch.manual_seed(0)
    # 16 couplings; the 32-coupling figures in docs/flows.md come from nf_kernels.flows.memory_report.
    flow = build_model("realnvp", (3, 8, 8), num_scales=2, num_steps=4, final_steps=8, hidden=16, depth=1)
    x = torch.rand(4, 3, 8, 8)
    flow.memory_saving = False
    standard = activation_memory(flow, x)
    flow.memory_saving = True
    saving = activation_memory(flow, x)
    assert standard.peak == standard.after_forward  # backward only frees what forward saved
    assert saving.after_forward <= 0.05 * standard.after_forward  # about the output alone
    assert saving.peak <= 0.30 * standard.peak


@pytest.mark.parametrize("name", MODELS)
def test_memory_saving_under_autocast_replays_the_forward_precision(name):
    """Backward runs outside autocast; the rebuilt graphs must use the forward's precision (bfloat16 here).

    Inputs rebuilt in float32 differ from the stored ones by rounding, which bfloat16 conditioners can amplify
    into a rounding step of their own, so the tolerance is bfloat16's (SPEC section 3).
    """
    flow = tiny_model(name, IMAGE_SHAPE, num_steps=2)
    x = torch.rand(4, *IMAGE_SHAPE)
    results = []
    for memory_saving in (False, True):
        flow.memory_saving = memory_saving
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z, _ = flow(x)
            log_prob = flow.log_prob(x)
        assert z.dtype == torch.float32  # the data stream stays in float32: only conditioners run in bfloat16
        results.append(torch.autograd.grad(-log_prob.mean(), list(flow.parameters())))
    for standard, saving in zip(*results):
        assert rel_err(saving, standard) <= 2e-2


def _stack_gradients(layers, x, context, memory_saving, weights):
    """Gradients of a loss of both outputs of `layers` run as one stack: the input, every parameter, the context."""
    x = x.clone().requires_grad_(True)
    context = None if context is None else context.clone().requires_grad_(True)
    y, logdet = forward_layers(layers, x, context, memory_saving)
    loss = (y * weights[0]).sum() + (logdet * weights[1]).sum()  # non-uniform weights: every element counts
    wrt = [x, *layers.parameters()] + ([context] if context is not None else [])
    return torch.autograd.grad(loss, wrt, allow_unused=True)


def _context_couplings():
    """Couplings reading a context (the features a conditional model's embedding gives), every mask kind."""
    return [
        ("affine-half-context", (5,), lambda s: AffineCoupling(s, hidden=8, context_features=3)),
        ("affine-checkerboard-context", (1, 4, 4),
         lambda s: AffineCoupling(s, mask="checkerboard", hidden=8, depth=1, context_features=3)),
        ("affine-bool-mask-flip-context", (6,), lambda s: AffineCoupling(s, mask=_bool_mask(s), flip=True, hidden=8,
                                                                          context_features=3)),
        ("additive-half-flip-context", (5,), lambda s: AdditiveCoupling(s, flip=True, hidden=8, context_features=3)),
    ]  # fmt: skip


@pytest.mark.parametrize("name,shape,factory", LAYERS + _context_couplings(), ids=[c[0] for c in LAYERS + _context_couplings()])
def test_every_layer_kind_gets_the_standard_gradients_in_float64(name, shape, factory):
    """Each layer kind alone in a memory-saving stack: the couplings through their own backward (one conditioner
    pass on the output), the others rebuilt by inverse and forward; exact up to float64 rounding."""
    torch.manual_seed(0)
    layers = torch.nn.ModuleList([perturb(factory(shape).double(), std=0.3)]).train()
    x = torch.randn(4, *shape, dtype=torch.float64)
    takes_context = getattr(layers[0], "context_features", None)
    context = torch.randn(4, takes_context, dtype=torch.float64) if takes_context else None
    y_shape = forward_layers(layers, x, context)[0].shape  # also initializes ActNorm, outside the comparison
    weights = (torch.randn(y_shape, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    standard = _stack_gradients(layers, x, context, False, weights)
    saving = _stack_gradients(layers, x, context, True, weights)
    for g_standard, g_saving in zip(standard, saving):
        assert (g_standard is None) == (g_saving is None)
        if g_standard is not None:
            assert rel_err(g_saving, g_standard) <= 1e-10


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["affine", "additive"])
def test_a_coupling_backward_runs_its_conditioner_once_and_never_its_forward(kind, backend, monkeypatch):
    """The memory-saving backward of a coupling: one conditioner forward (on the output) and the op's inverse;
    neither the layer's forward nor a second conditioner pass."""
    torch.manual_seed(0)
    make = AffineCoupling if kind == "affine" else AdditiveCoupling
    layers = torch.nn.ModuleList([perturb(make((4,), hidden=8, flip=i % 2 == 1, backend=backend)) for i in range(3)])
    x = torch.randn(5, 4)
    y, logdet = forward_layers(layers, x, None, memory_saving=True)
    calls = {"conditioner": 0, "forward op": 0, "inverse op": 0}

    def count_conditioner(module, inputs):
        calls["conditioner"] += 1

    for layer in layers:
        layer.conditioner.register_forward_pre_hook(count_conditioner)
    op_name = f"{kind}_coupling"
    op = getattr(coupling.functional, op_name)

    def spy(*args, reverse=False, **kwargs):
        calls["inverse op" if reverse else "forward op"] += 1
        return op(*args, reverse=reverse, **kwargs)

    monkeypatch.setattr(coupling.functional, op_name, spy)
    (y.square().sum() + logdet.sum()).backward()
    assert calls == {"conditioner": 3, "forward op": 0, "inverse op": 3}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers.parameters())


def test_memory_saving_costs_one_conditioner_forward_more_than_the_standard_step():
    """Conditioner calls in one training step: standard 1 a coupling (forward); memory-saving 2 (the forward pass
    and one in backward). The old recomputation had 3: an inverse and a forward to rebuild each layer."""
    counts = {}
    for memory_saving in (False, True):
        flow = tiny_model("glow", IMAGE_SHAPE, num_steps=2)
        flow.memory_saving = memory_saving
        calls = []
        for module in flow.modules():
            if isinstance(module, (AffineCoupling, AdditiveCoupling)):
                module.conditioner.register_forward_pre_hook(lambda module, inputs: calls.append(1))
        (-flow.log_prob(torch.rand(2, *IMAGE_SHAPE)).mean()).backward()
        couplings = sum(isinstance(m, AffineCoupling) for m in flow.modules())
        counts[memory_saving] = len(calls) / couplings
    assert counts == {False: 1, True: 2}
