"""A coupling layer and its MLP conditioner as one node (nf_kernels_ext::mlp_coupling, csrc/ops/mlp_coupling.cpp)
against the same layer run as two nodes (the MLP's, then the coupling op's): the same outputs and gradients bit for
bit, derivatives against finite differences and the Jacobian's log-determinant, and the two nodes wherever the one
could differ from them (a context, hooks, other masks and backends, autocast, forward-mode AD)."""

import copy

import pytest
import torch
from conftest import FUSED_CPU_BACKENDS
from flows_helpers import log_abs_det_jacobian, realnvp_after_steps
from torch.autograd import forward_ad

from nf_kernels import _prepared
from nf_kernels._arguments import SCALES
from nf_kernels.flows import AdditiveCoupling, AffineCoupling, build_model
from nf_kernels.flows import fused_coupling_layer

pytestmark = pytest.mark.skipif("cpu" not in FUSED_CPU_BACKENDS, reason="the C++ extension is not built")

ONE_NODE = "CppNode<nf_kernels::(anonymous namespace)::MlpCoupling>"


def _layer(kind, dtype=torch.float64, *, features=7, flip=False, depth=2, scale="tanh", seed=0, **options):
    torch.manual_seed(seed)
    if kind == "additive":
        layer = AdditiveCoupling((features,), flip=flip, hidden=9, depth=depth, **options)
    else:
        layer = AffineCoupling((features,), flip=flip, hidden=9, depth=depth, scale=scale, **options)
    layer = layer.to(dtype)
    with torch.no_grad():  # an ordinary, nonzero conditioner: the zero last layer would hide its gradients
        for p in layer.parameters():
            p.normal_(0.0, 0.4)
    return layer


def _two_nodes(layer):
    twin = copy.deepcopy(layer)
    twin._one_node = False
    return twin


def _run(layer, x, grad_y, grad_logdet):
    """(y, logdet, y's grad_fn name, the gradients of x and of every parameter)."""
    x = x.clone().requires_grad_(True)
    y, logdet = layer(x)
    grads = torch.autograd.grad([y, logdet], [x, *layer.parameters()], [grad_y, grad_logdet])
    return y, logdet, y.grad_fn.name(), grads


def _assert_same_bits(one, two, x, seed=1):
    g = torch.Generator().manual_seed(seed)
    grad_y = torch.randn(x.shape, generator=g).to(x.dtype)
    grad_logdet = torch.randn(x.shape[0], generator=g).to(torch.float32 if x.dtype == torch.bfloat16 else x.dtype)
    y1, l1, node1, grads1 = _run(one, x, grad_y, grad_logdet)
    y2, l2, node2, grads2 = _run(two, x, grad_y, grad_logdet)
    assert ONE_NODE in node1 and ONE_NODE not in node2
    assert torch.equal(y1, y2) and torch.equal(l1, l2)
    for got, want in zip(grads1, grads2, strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 20.0], ids=["near-zero", "ordinary", "large"])
@pytest.mark.parametrize("kind", ["affine", "additive"])
def test_one_node_equals_two_nodes_bitwise(kind, scale, flip, dtype):
    layer = _layer(kind, dtype, flip=flip)
    x = (torch.randn(37, 14) * scale).to(dtype)[:, ::2]  # odd batch and features, non-contiguous
    _assert_same_bits(layer, _two_nodes(layer), x)


def _products(layer, x):
    """The names of the matrix products the layer's forward and backward run (torch.profiler's events)."""
    x = x.clone().requires_grad_(True)
    with torch.profiler.profile() as prof:
        y, logdet = layer(x)
        (y.sum() + logdet.sum()).backward()
    return [e.name for e in prof.events() if e.name in ("aten::addmm", "aten::mm")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_last_bias_is_folded_into_the_coupling(dtype):
    """On the CPU in float32 and float64 the one node's last layer is a product alone (the kernels add its bias),
    where the two nodes run addmm; in bfloat16 the one node runs addmm too (the product would round first)."""
    layer = _layer("affine", dtype, depth=2)
    x = torch.randn(6, 7, dtype=dtype)
    one = _products(layer, x)
    two = _products(_two_nodes(layer), x)
    assert one.count("aten::addmm") == 2 and two.count("aten::addmm") == 3
    assert len(one) == len(two)
    bf16 = _layer("affine", torch.bfloat16, depth=2)
    assert _products(bf16, x.bfloat16()).count("aten::addmm") == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_wide_last_layer_equals_two_nodes_to_rounding(dtype):
    """Where the BLAS rounds addmm(b, a, W^T) otherwise than mm(a, W^T) + b (MKL here: float32 from 512 hidden features, float64 from 256),
    the folded bias differs from the two nodes by that rounding of h alone."""
    torch.manual_seed(0)
    layer = AffineCoupling((64,), hidden=1024, depth=1).to(dtype)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 0.02)
    x = torch.randn(33, 64, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    grad_y, grad_logdet = torch.randn(x.shape, generator=g).to(dtype), torch.randn(33, generator=g).to(dtype)
    y1, l1, node1, grads1 = _run(layer, x, grad_y, grad_logdet)
    y2, l2, node2, grads2 = _run(_two_nodes(layer), x, grad_y, grad_logdet)
    assert ONE_NODE in node1 and ONE_NODE not in node2
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y1, y2, **tol)
    torch.testing.assert_close(l1, l2, **tol)
    for got, want in zip(grads1, grads2, strict=True):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("scale_map", SCALES)
def test_every_scale_map_and_option(scale_map):
    options = dict(clamp=1.5, shift_first=True) if scale_map in ("tanh", "clip", "exp") else {}
    layer = _layer("affine", scale=scale_map, **options)
    _assert_same_bits(layer, _two_nodes(layer), torch.randn(5, 7, dtype=torch.float64) * 2)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("shape", [(1, 2), (3, 3), (4, 64)], ids=["1x2", "3x3", "4x64"])
def test_sizes_and_depths(shape, depth):
    batch, features = shape
    layer = _layer("affine", features=features, depth=depth)
    _assert_same_bits(layer, _two_nodes(layer), torch.randn(batch, features, dtype=torch.float64))


def test_only_the_gradients_asked_for_are_computed():
    """Frozen parameters and an input without grad get no gradient, as through two nodes; the rest are the same."""
    layers = [_layer("affine"), _layer("affine")]
    layers[1]._one_node = False
    x = torch.randn(5, 7, dtype=torch.float64)
    for layer in layers:
        layer.conditioner.net[0].weight.requires_grad_(False)
        layer.conditioner.net[4].bias.requires_grad_(False)
        y, logdet = layer(x)
        (y.square().sum() + logdet.sum()).backward()
    assert ONE_NODE in layers[0](x)[0].grad_fn.name()
    for p1, p2 in zip(layers[0].parameters(), layers[1].parameters(), strict=True):
        assert (p1.grad is None) == (p2.grad is None) == (not p1.requires_grad)
        if p1.grad is not None:
            assert torch.equal(p1.grad, p2.grad)


@pytest.mark.parametrize("kind", ["affine", "additive"])
def test_gradcheck_and_the_jacobian(kind):
    layer = _layer(kind, scale="exp")
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    params = list(layer.parameters())

    def run(x, *params):
        y, logdet = layer(x)
        return y, logdet

    assert ONE_NODE in layer(x)[0].grad_fn.name()
    assert torch.autograd.gradcheck(run, (x, *params))
    logdet = layer(x)[1]
    assert torch.allclose(logdet, log_abs_det_jacobian(lambda v: layer(v)[0], x.detach()), rtol=1e-10, atol=1e-10)


def test_create_graph_gives_the_same_gradient_and_refuses_a_second_derivative():
    layer = _layer("affine")
    twin = _two_nodes(layer)
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    found = []
    for net in (layer, twin):
        y, logdet = net(x)
        (grad_x,) = torch.autograd.grad(y.square().sum() + logdet.sum(), x, create_graph=True)
        found.append(grad_x)
        with pytest.raises(RuntimeError, match="first-order gradients only"):
            grad_x.sum().backward()
    assert torch.equal(found[0], found[1])


def test_training_is_bitwise_the_same():
    """A RealNVP trained a few Adam steps with one node per coupling has the parameters it has with two."""
    x = torch.randn(33, 6)

    def one_node(on):
        return lambda module: setattr(module, "_one_node", on) if isinstance(module, AffineCoupling) else None

    assert torch.equal(realnvp_after_steps(one_node(True), x), realnvp_after_steps(one_node(False), x))


def _node(layer, x, context=None):
    return layer(x, context)[0].grad_fn.name()


def test_calls_the_node_cannot_take_run_two_nodes():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    layer = _layer("affine")
    assert ONE_NODE in _node(layer, x)
    # A hook on the conditioner runs: the conditioner is called as a module.
    seen = []
    handle = layer.conditioner.register_forward_hook(lambda *args: seen.append(True))
    assert ONE_NODE not in _node(layer, x) and seen
    handle.remove()
    # The MLP's modules one by one, another backend, another mask, a conditioner of another class.
    unfused = _layer("affine")
    unfused.conditioner.fused = False
    assert ONE_NODE not in _node(unfused, x)
    assert ONE_NODE not in _node(_layer("affine", backend="reference"), x)
    mask = torch.tensor([True, False] * 3 + [True])
    assert ONE_NODE not in _node(_layer("affine", mask=mask), x)
    custom = _layer("affine")
    custom.conditioner = torch.nn.Sequential(*custom.conditioner.net)
    assert ONE_NODE not in _node(custom, x)
    # A context, autocast, forward-mode AD.
    conditional = _layer("affine", context_features=2)
    assert ONE_NODE not in _node(conditional, x, torch.randn(5, 2, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ONE_NODE not in _node(layer, x)
    # Under forward-mode AD the layer does what two nodes do (the coupling op has no forward-mode derivative).
    outcomes = []
    for net in (layer, _two_nodes(layer)):
        with forward_ad.dual_level():
            try:
                net(forward_ad.make_dual(x.detach(), torch.ones_like(x)))
                outcomes.append(None)
            except RuntimeError as error:
                outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]


def test_bad_calls_raise_what_two_nodes_raise():
    layer = _layer("affine")
    twin = _two_nodes(layer)
    for bad in (torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float32)):
        errors = []
        for net in (layer, twin):
            with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
                net(bad)
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1]


def _outcome(net, *args):
    """What `net(*args)` does: its output's grad_fn name, or the error it raises (type and message)."""
    try:
        return net(*args)[0].grad_fn.name()
    except (ValueError, TypeError, RuntimeError) as error:
        return type(error), str(error)


def test_a_broken_conditioner_or_option_raises_what_two_nodes_raise():
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    cases = {
        "first layer too narrow": lambda layer: layer.conditioner.net.__setitem__(0, torch.nn.Linear(2, 9).double()),
        "last layer too wide": lambda layer: layer.conditioner.net.__setitem__(4, torch.nn.Linear(9, 10).double()),
        "both": lambda layer: (layer.conditioner.net.__setitem__(0, torch.nn.Linear(2, 9).double()),
                               layer.conditioner.net.__setitem__(4, torch.nn.Linear(9, 10).double())),
        "a bool clamp": lambda layer: setattr(layer, "clamp", True),
        "a list clamp": lambda layer: setattr(layer, "clamp", [2.0]),
    }  # fmt: skip
    for name, breaks in cases.items():
        layer = _layer("affine")
        assert ONE_NODE in _outcome(layer, x)  # a plan is remembered before the layer breaks
        twin = _two_nodes(layer)
        breaks(layer)
        breaks(twin)
        got, want = _outcome(layer, x), _outcome(twin, x)
        assert not isinstance(want, str), name
        assert got == want, name


def test_the_backend_is_chosen_on_every_call(monkeypatch):
    """NF_KERNELS_BACKEND may change between calls: a layer of backend "auto" follows it, as its op does."""
    layer = _layer("affine")
    x = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    assert ONE_NODE in _node(layer, x)
    monkeypatch.setenv("NF_KERNELS_BACKEND", "reference")
    assert ONE_NODE not in _node(layer, x)
    assert _outcome(layer, x) == _outcome(_two_nodes(layer), x)
    monkeypatch.setenv("NF_KERNELS_BACKEND", "no-such-backend")
    assert _outcome(layer, x) == _outcome(_two_nodes(layer), x)
    monkeypatch.delenv("NF_KERNELS_BACKEND")
    assert ONE_NODE in _node(layer, x)


def test_a_forward_set_on_the_conditioner_instance_is_called():
    layer = _layer("affine")
    x = torch.randn(5, 7, dtype=torch.float64)
    calls = []
    forward = layer.conditioner.forward
    layer.conditioner.forward = lambda *args: calls.append(True) or forward(*args)
    layer(x)
    assert calls


def test_the_raw_op_checks_its_kept_features():
    layer = _layer("affine")
    weights = [p for p in layer.conditioner.parameters()]
    x = torch.randn(2, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="kept features"):
        torch.ops.nf_kernels_ext.mlp_coupling(x, weights, 5, 3, None, [0], 2.0)
    with pytest.raises(ValueError, match="layer 0 has weight"):
        torch.ops.nf_kernels_ext.mlp_coupling(x, weights, 0, 2, None, [0], 2.0)


def test_plans_are_remembered_per_combination():
    _prepared.clear()
    layer = _layer("affine")
    for batch in (3, 3, 4):
        layer(torch.randn(batch, 7, dtype=torch.float64))
    assert _prepared.cached_calls() == 2


def _spy_on(monkeypatch, name):
    """Record, call by call, whether the coupling layers' `name` (a one-call step of fused_coupling_layer) ran."""
    taken = []
    one_call = getattr(fused_coupling_layer, name)

    def spy(*args):
        out = one_call(*args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(f"nf_kernels.flows.coupling.{name}", spy)
    return taken


def _same_gradients(first, second):
    for got, want in zip(first, second, strict=True):
        assert (got is None and want is None) or torch.equal(got, want)


def _memory_saving_flow(name, dtype, one_call, seed=0, **sizes):
    torch.manual_seed(seed)
    flow = build_model(name, (7,), num_layers=4, hidden=9, memory_saving=True, **sizes).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    for module in flow.modules():
        if isinstance(module, (AffineCoupling, AdditiveCoupling)):
            module._one_node = one_call
    return flow


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["realnvp", "nice"])
def test_memory_saving_steps_in_one_call_equal_the_python_steps_bitwise(name, dtype, monkeypatch):
    """Memory-saving backprop's step through each coupling, one extension call, gives what the layer's Python step
    gives: the same input gradient and parameter gradients, to the bit."""
    taken = _spy_on(monkeypatch, "backward_from_output_in_one_call")
    x = (torch.randn(9, 7) * 2).to(dtype)
    grads = []
    for flag in (True, False):
        flow = _memory_saving_flow(name, dtype, flag)
        next(flow.parameters()).requires_grad_(False)  # a frozen parameter gets no gradient either way
        leaf = x.clone().requires_grad_(True)
        (flow.log_prob(leaf) * torch.linspace(-1, 1, 9, dtype=dtype)).sum().backward()
        grads.append([leaf.grad] + [p.grad for p in flow.parameters()])
    assert taken == [True] * 4  # each coupling of the first flow; the second's never ask
    assert grads[0][1] is None and grads[1][1] is None
    _same_gradients(*grads)


def test_the_rebuilt_step_checks_its_arguments():
    layer = _layer("affine")
    weights = list(layer.conditioner.parameters())
    y = torch.randn(2, 7, dtype=torch.float64)
    step = torch.ops.nf_kernels_ext.mlp_coupling_rebuilt_backward
    with pytest.raises(ValueError, match="layer_needs_grad"):
        step(y, y, y[:, 0], weights, [1], 0, 3, None, [0], [0], 2.0)
    with pytest.raises(ValueError, match="kept features"):
        step(y, y, y[:, 0], weights, [1] * len(weights), 6, 3, None, [0], None, 2.0)


@pytest.mark.parametrize("kind", ["affine", "additive"])
def test_a_recomputed_conditioners_step_in_one_call_equals_the_python_step_bitwise(kind, monkeypatch):
    """recompute_conditioner=True: the layer's step from its input, one extension call, gives the Python step's
    gradients to the bit (and is taken)."""
    taken = _spy_on(monkeypatch, "backward_from_input_in_one_call")
    x = torch.randn(9, 7, dtype=torch.float64) * 2
    grads = []
    for flag in (True, False):
        layer = _layer(kind, recompute_conditioner=True)
        layer._one_node = flag
        layer.conditioner.net[2].weight.requires_grad_(False)
        leaf = x.clone().requires_grad_(True)
        y, logdet = layer(leaf)
        (y.square().sum() + (logdet * torch.linspace(-1, 1, 9, dtype=x.dtype)).sum()).backward()
        grads.append([leaf.grad] + [p.grad for p in layer.parameters()])
    assert taken == [True]
    _same_gradients(*grads)
