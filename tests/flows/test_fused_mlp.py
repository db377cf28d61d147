"""The MLP conditioner's fused node (nf_kernels_ext::mlp, csrc/ops/mlp.cpp) against the modules it stands in for:
the same outputs and gradients bit for bit, a correct second derivative, and the modules wherever the node could
differ from them (hooks, autocast, changed layers, tracing)."""

import pytest
import torch
from conftest import FUSED_CPU_BACKENDS
from flows_helpers import realnvp_after_steps
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from nf_kernels.flows import MLP
from nf_kernels.flows import fused_mlp
from nf_kernels.flows.fused_mlp import fused_layers

pytestmark = pytest.mark.skipif("cpu" not in FUSED_CPU_BACKENDS, reason="the C++ extension is not built")

FUSED_NODE = "CppNode<nf_kernels::(anonymous namespace)::Mlp>"
# (in_features, out_features, hidden, num_hidden_layers, context_features): odd widths, one to three hidden layers
SHAPES = [(3, 7, 5, 1, None), (32, 64, 128, 2, None), (5, 6, 9, 3, None), (4, 10, 6, 2, 3)]


def _mlp(in_features, out_features, hidden, depth, context_features, dtype, fused=True, seed=0):
    torch.manual_seed(seed)
    net = MLP(in_features, out_features, hidden=hidden, num_hidden_layers=depth,
              context_features=context_features, fused=fused).to(dtype)  # fmt: skip
    with torch.no_grad():  # an ordinary, nonzero network: the zero last layer would hide its gradients
        for p in net.parameters():
            p.normal_(0.0, 0.5)
    return net


def _run(net, x, context, grad):
    """(output, its grad_fn's name, the gradients of x, context and every parameter)."""
    x = x.clone().requires_grad_(True)
    context = None if context is None else context.clone().requires_grad_(True)
    out = net(x, context)
    wrt = [x] + ([context] if context is not None else []) + list(net.parameters())
    return out, out.grad_fn.name(), torch.autograd.grad(out, wrt, grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(str(v) for v in s[:4]) + ("-context" if s[4] else ""))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0], ids=["near-zero", "ordinary", "large"])
def test_fused_node_equals_the_modules_bitwise(shape, dtype, scale):
    in_features, out_features, _, _, context_features = shape
    fused, modules = _mlp(*shape, dtype), _mlp(*shape, dtype, fused=False)
    x = (torch.randn(37, 2 * in_features) * scale).to(dtype)[:, ::2]  # odd batch, non-contiguous
    context = torch.randn(37, context_features).to(dtype) if context_features else None
    grad = torch.randn(37, out_features).to(dtype)
    out_f, node_f, grads_f = _run(fused, x, context, grad)
    out_m, node_m, grads_m = _run(modules, x, context, grad)
    assert FUSED_NODE in node_f and FUSED_NODE not in node_m
    assert torch.equal(out_f, out_m)
    assert len(grads_f) == len(grads_m)
    for got, want in zip(grads_f, grads_m):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_widening_layer_s_weight_gradient_equals_the_modules_bitwise(dtype):
    """The issue's D=4096 conditioner at its batch of 256: its last layer widens (64 -> 4096), where the node takes
    the weight gradient as (a^T g)^T (csrc/ops/mlp.cpp, weight_gradient); the modules take g^T a."""
    fused, modules = _mlp(2048, 4096, 64, 2, None, dtype), _mlp(2048, 4096, 64, 2, None, dtype, fused=False)
    x = torch.randn(256, 2048).to(dtype)
    grad = torch.randn(256, 4096).to(dtype)
    (_, node_f, grads_f), (_, _, grads_m) = _run(fused, x, None, grad), _run(modules, x, None, grad)
    assert FUSED_NODE in node_f
    for got, want in zip(grads_f, grads_m):
        assert got.is_contiguous() == want.is_contiguous()
        assert torch.equal(got, want)


def test_only_the_gradients_asked_for_are_computed():
    """Frozen layers and an input without grad get no gradient, as through the modules; the rest are the same."""
    fused, modules = _mlp(3, 4, 6, 2, None, torch.float64), _mlp(3, 4, 6, 2, None, torch.float64, fused=False)
    for net in (fused, modules):
        net.net[0].weight.requires_grad_(False)
        net.net[2].bias.requires_grad_(False)
    x = torch.randn(5, 3, dtype=torch.float64)
    outs = [net(x) for net in (fused, modules)]
    assert FUSED_NODE in outs[0].grad_fn.name()
    for net, out in zip((fused, modules), outs):
        out.sum().backward()
    for p_f, p_m in zip(fused.parameters(), modules.parameters()):
        assert (p_f.grad is None) == (p_m.grad is None) == (not p_f.requires_grad)
        if p_f.grad is not None:
            assert torch.equal(p_f.grad, p_m.grad)


def test_gradcheck_and_second_derivatives():
    """First and second derivatives against finite differences in float64 (a recorded backward reruns the layers)."""
    net = _mlp(3, 4, 5, 2, 2, torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    context = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    params = list(net.parameters())

    names = [name for name, _ in net.named_parameters()]

    def run(x, context, *values):
        out = torch.func.functional_call(net, dict(zip(names, values)), (x, context))
        assert FUSED_NODE in out.grad_fn.name()
        return out

    assert torch.autograd.gradcheck(run, (x, context, *params))
    assert torch.autograd.gradgradcheck(run, (x, context, *params))
    # The second derivative of the fused node against the modules' own double backward.
    out = net(x, context)
    assert FUSED_NODE in out.grad_fn.name()
    (g,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    (gg_fused,) = torch.autograd.grad(g.sum(), x)
    net.fused = False
    (g,) = torch.autograd.grad(net(x, context).square().sum(), x, create_graph=True)
    (gg_modules,) = torch.autograd.grad(g.sum(), x)
    assert torch.allclose(gg_fused, gg_modules, rtol=1e-12, atol=1e-12)


def test_training_is_bitwise_the_same():
    """A RealNVP trained a few Adam steps with fused conditioners has the parameters it has without them."""
    x = torch.randn(33, 6)

    def fused(on):
        return lambda module: setattr(module, "fused", on) if isinstance(module, MLP) else None

    assert torch.equal(realnvp_after_steps(fused(True), x), realnvp_after_steps(fused(False), x))


def test_state_dict_is_the_modules():
    """The fused node reads the layers' own parameters: state_dict keys and loading are unchanged."""
    net = _mlp(3, 4, 5, 2, None, torch.float32)
    assert list(net.state_dict()) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight",
                                      "net.4.bias"]  # fmt: skip
    other = _mlp(3, 4, 5, 2, None, torch.float32, seed=5)
    other.load_state_dict(net.state_dict())
    x = torch.randn(4, 3)
    assert torch.equal(other(x), net(x))


def _forward_node(net, x):
    return net(x).grad_fn.name()


def test_hooks_autocast_and_changed_layers_take_the_modules():
    """Wherever the node would skip what the modules do, the modules run (and say so by their autograd nodes)."""
    x = torch.randn(5, 3)
    net = _mlp(3, 4, 5, 2, None, torch.float32)
    assert FUSED_NODE in _forward_node(net, x)
    seen = []
    handle = net.net[2].register_forward_hook(lambda module, args, out: seen.append(out.shape))
    assert FUSED_NODE not in _forward_node(net, x) and seen == [torch.Size([5, 5])]
    handle.remove()
    handle = nn.modules.module.register_module_forward_pre_hook(lambda module, args: seen.append(type(module)))
    try:
        assert FUSED_NODE not in _forward_node(net, x) and nn.Linear in seen
    finally:
        handle.remove()
    assert FUSED_NODE in _forward_node(net, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.dtype == torch.bfloat16 and FUSED_NODE not in out.grad_fn.name()
    net.fused = False
    assert FUSED_NODE not in _forward_node(net, x)
    net.fused = True
    net.net[1] = nn.Tanh()  # no longer Linear, ReLU, ...
    assert fused_layers(net.net) is None and FUSED_NODE not in _forward_node(net, x)
    net.net[1] = nn.ReLU(inplace=True)
    assert fused_layers(net.net) is None
    net.net[1] = nn.ReLU()
    bias = net.net[0].bias
    net.net[0].bias = None
    assert fused_layers(net.net) is None
    net.net[0].bias = bias
    assert fused_layers(net.net) is not None
    net.net.append(nn.ReLU())  # ends in a ReLU
    assert fused_layers(net.net) is None
    del net.net[-1]
    tied = nn.Parameter(torch.randn(5, 5).t())  # a transposed weight: autograd orders its products otherwise
    net.net[2].weight = tied
    assert fused_layers(net.net) is None and FUSED_NODE not in _forward_node(net, x)
    net.net[2].weight = nn.Parameter(tied.detach().contiguous())
    assert FUSED_NODE in _forward_node(net, x)
    column_major = x.t().contiguous().t()
    assert FUSED_NODE not in _forward_node(net, column_major)
    assert torch.equal(net(column_major), net(x))


def test_forward_mode_ad_takes_the_modules():
    net = _mlp(3, 4, 5, 2, None, torch.float64)
    x, tangent = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    with torch.autograd.forward_ad.dual_level():
        out = net(torch.autograd.forward_ad.make_dual(x, tangent))
        jvp = torch.autograd.forward_ad.unpack_dual(out).tangent
    expected = torch.autograd.functional.jvp(lambda v: net(v), x, tangent)[1]
    assert torch.allclose(jvp, expected, rtol=1e-12, atol=1e-12)


def test_an_mlp_pickled_before_the_option_existed_runs_fused():
    net = _mlp(3, 4, 5, 2, None, torch.float32)
    del net.fused  # as an object saved by an older version has no such attribute
    assert FUSED_NODE in _forward_node(net, torch.randn(2, 3))


def test_transforms_and_tracing_take_the_modules(monkeypatch):
    net = _mlp(3, 4, 5, 2, None, torch.float32)
    x = torch.randn(5, 3)
    expected = net(x)
    calls = []
    real = fused_mlp._mlp_op
    monkeypatch.setattr(fused_mlp, "_mlp_op", lambda *args: calls.append(1) or real(*args))
    net(x)
    assert calls == [1]  # the spy sees an eager call
    batched = torch.func.vmap(lambda row: net(row[None])[0])(x)  # a functorch transform: the modules, per sample
    assert torch.allclose(batched, expected, rtol=1e-6, atol=1e-6)
    traced = make_fx(net)(x)  # under a dispatch mode
    assert torch.equal(traced(x), expected)
    assert calls == [1]  # neither went through the node


def test_bad_layer_lists_are_refused_by_name():
    x = torch.randn(2, 3)
    op = torch.ops.nf_kernels_ext.mlp
    with pytest.raises(ValueError, match="weight, bias"):
        op(x, [torch.randn(4, 3)])
    with pytest.raises(ValueError, match=r"layer 1 has weight \[2, 5\]"):
        op(x, [torch.randn(4, 3), torch.randn(4), torch.randn(2, 5), torch.randn(2)])
    with pytest.raises(ValueError, match="x must be"):
        op(torch.randn(3), [torch.randn(4, 3), torch.randn(4)])
