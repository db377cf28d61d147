"""nf_kernels.compat.pyro against pyro itself: transformed distributions built with pyro's API, before and after
accelerate (tests/compat_helpers.py says what is compared)."""

import inspect

import pytest
import torch
from compat_helpers import BACKENDS, Questions, accelerated_copy, assert_close, skip_if_the_backend_lacks_it
from compat_helpers import check_against_the_library, check_compiled_like_the_library

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


def _fresh_samples_and_their_log_prob(model):
    """Samples, and their log-density: scoring what was just drawn runs on each transform's cache (pyro's own,
    and the drop-in's log-det cache)."""
    distribution = model.distribution()
    samples = distribution.rsample((5,))
    return samples, distribution.log_prob(samples)


# pyro's sampling direction is the transform's call, its density direction the inverse (`inv`) in log_prob.
ASK = Questions(log_prob=lambda m, x: m.distribution().log_prob(x),
                inverse=lambda m, x: m.layers[0].inv(x), sample=_fresh_samples_and_their_log_prob)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_accelerated_flow_computes_what_pyro_does(name, backend, dtype):
    model = _model(name, dtype)
    x = torch.randn(8, model.zero.numel(), dtype=dtype)
    _, report = check_against_the_library(model, backend, dtype, x, ASK, replaced=3)
    assert not report.left_alone


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
    model = _model("halves", torch.float32)
    check_compiled_like_the_library(model, lambda m, x: m.distribution().log_prob(x), torch.randn(8, 6), backend, "pyro")
