"""nf_kernels.compat.pyro against pyro itself: transformed distributions built with pyro's API, before and after
accelerate (tests/compat_helpers.py says what is compared)."""

import inspect

import pytest
import torch
from compat_helpers import (
    BACKENDS,
    accelerated_copy,
    assert_close,
    assert_same_gradients,
    assert_state_dicts_match,
    compiles_fullgraph,
    leaf,
    seeded,
    skip_if_the_backend_lacks_it,
)

pyro = pytest.importorskip("pyro")
import pyro.distributions as dist  # noqa: E402
from pyro.distributions import transforms as T  # noqa: E402
from pyro.nn import ConditionalDenseNN, DenseNN  # noqa: E402

from nf_kernels.compat import Unsupported, accelerate  # noqa: E402
from nf_kernels.compat import pyro as fused  # noqa: E402


class Model(torch.nn.Module):
    """A pyro flow as its documentation builds one: couplings (in a ModuleList, for their parameters) and
    permutations, a TransformedDistribution over them."""

    def __init__(self, features=6, couplings=3, split_dim=None, **kwargs):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            T.affine_coupling(features, hidden_dims=[16, 16], split_dim=split_dim, **kwargs) for _ in range(couplings))
        self.permutations = [T.Permute(torch.randperm(features, generator=torch.Generator().manual_seed(i)))
                             for i in range(couplings)]  # fmt: skip
        self.register_buffer("zero", torch.zeros(features))

    def distribution(self):
        base = dist.Normal(self.zero, torch.ones_like(self.zero)).to_event(1)
        transforms = [t for pair in zip(self.layers, self.permutations) for t in pair]
        return dist.TransformedDistribution(base, transforms)


MODELS = {
    "halves": lambda: Model(6),
    "odd-split": lambda: Model(7, split_dim=3),
    "tight-clips": lambda: Model(6, log_scale_min_clip=-0.3, log_scale_max_clip=0.2),
}


def _model(name, dtype):
    torch.manual_seed(0)
    model = MODELS[name]().to(dtype)
    with torch.no_grad():  # log-scales large enough that the clips are reached
        for layer in model.layers:
            layer.nn.layers[-1].weight.mul_(4.0)
    return model


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_accelerated_flow_computes_what_pyro_does(name, backend, dtype):
    model = _model(name, dtype)
    twin, report = accelerated_copy(model, backend)
    assert len(report.replaced) == 3 and not report.left_alone
    assert_state_dicts_match(model, twin)
    x = torch.randn(8, model.zero.numel(), dtype=dtype)
    with skip_if_the_backend_lacks_it(backend):
        assert_close(twin.distribution().log_prob(x), model.distribution().log_prob(x), dtype, "log_prob")
        samples, twin_samples = seeded(1, model.distribution().rsample, (5,)), seeded(1, twin.distribution().rsample, (5,))
        assert_close(twin_samples, samples, dtype, "samples")
        # Scoring the samples just drawn uses each transform's cache (pyro's, and the drop-in's log-det cache).
        assert_close(twin.distribution().log_prob(twin_samples), model.distribution().log_prob(samples), dtype,
                     "log_prob of fresh samples")  # fmt: skip
        layer, twin_layer = model.layers[0], twin.layers[0]
        assert_close(twin_layer.inv(x), layer.inv(x), dtype, "inverse")
        xa, xb = leaf(x), leaf(x)
        model.distribution().log_prob(xa).sum().backward()
        twin.distribution().log_prob(xb).sum().backward()
    assert_same_gradients(model, twin, xa, xb, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_gradient_passes_through_the_clip_as_in_pyro(backend):
    """pyro clamps the log-scale with its gradient passed through (clamp_preserve_gradients): d log|det| / d s = 1
    even where s is clipped, which the op's "clip" reproduces (finite differences would say 0 there)."""
    torch.manual_seed(0)
    hypernet = DenseNN(2, [8], [2, 2])
    with torch.no_grad():
        hypernet.layers[-1].bias.copy_(torch.tensor([0.0, 0.0, 9.0, -9.0]))  # log-scales far outside [-5, 3]
    layer = T.AffineCoupling(2, hypernet).double()
    twin, _ = accelerated_copy(layer, backend)
    x = torch.randn(3, 4, dtype=torch.float64)
    with skip_if_the_backend_lacks_it(backend):
        for module in (layer, twin):
            y = module(x)
            module.log_abs_det_jacobian(x, y).sum().backward()
        bias, twin_bias = layer.nn.layers[-1].bias.grad, twin.nn.layers[-1].bias.grad
    assert_close(twin_bias, bias, torch.float64, "bias gradient")
    assert torch.equal(bias[2:], torch.full((2,), 3.0, dtype=torch.float64))  # 1 per sample, 3 samples


@pytest.mark.parametrize("backend", BACKENDS)
def test_conditional_coupling(backend):
    torch.manual_seed(0)
    layer = T.ConditionalAffineCoupling(3, ConditionalDenseNN(3, 2, [8], [3, 3])).double()
    twin, report = accelerated_copy(layer, backend)
    assert len(report.replaced) == 1
    x, context = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    with skip_if_the_backend_lacks_it(backend):
        conditioned, twin_conditioned = layer.condition(context), twin.condition(context)
        assert isinstance(twin_conditioned, fused.AffineCoupling) and twin_conditioned.nf_kernels_backend == backend
        y, twin_y = conditioned(x), twin_conditioned(x)
        assert_close(twin_y, y, torch.float64, "y")
        assert_close(twin_conditioned.log_abs_det_jacobian(x, twin_y), conditioned.log_abs_det_jacobian(x, y),
                     torch.float64, "log-det")  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hypernet_returning_two_tensors(backend):
    """Not DenseNN's slices of one output: h is their concatenation."""

    class TwoNets(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mean, self.log_scale = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.mean(x), self.log_scale(x)

    torch.manual_seed(0)
    layer = T.AffineCoupling(3, TwoNets()).double()
    twin, _ = accelerated_copy(layer, backend)
    x = torch.randn(4, 6, dtype=torch.float64)
    with skip_if_the_backend_lacks_it(backend):
        assert_close(twin(x), layer(x), torch.float64, "y")


def test_drop_in_classes_take_pyro_constructors():
    for cls in (fused.AffineCoupling, fused.ConditionalAffineCoupling):
        assert inspect.signature(cls) == inspect.signature(cls.replaces) and issubclass(cls, cls.replaces)


def test_unbounded_clips_are_a_clear_error():
    with pytest.raises(Unsupported, match="log_scale_max_clip=inf"):
        fused.AffineCoupling(2, DenseNN(2, [8], [2, 2]), log_scale_max_clip=float("inf"))
    report = accelerate([T.spline_coupling(4)])
    assert not report.replaced and "spline coupling" in report.left_alone[0].reason


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compiles_whole_where_pyro_does(backend):
    if backend not in BACKENDS:
        pytest.skip(f"{backend} does not run here")
    model = _model("halves", torch.float32)
    x = torch.randn(8, 6)

    def log_prob(model, x):
        return model.distribution().log_prob(x)

    twin, _ = accelerated_copy(model, backend)  # before the runs below fill pyro's transform caches
    if not compiles_fullgraph(log_prob, model, x):
        pytest.skip("pyro's own flow does not compile with fullgraph=True")
    torch._dynamo.reset()
    compiled = torch.compile(log_prob, fullgraph=True, backend="aot_eager")
    assert_close(compiled(twin, x), log_prob(model, x), torch.float32, "compiled log_prob")
