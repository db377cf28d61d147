"""nf_kernels.compat.nflows against nflows itself: models built with nflows' API, before and after accelerate
(tests/compat_helpers.py says what is compared)."""

import inspect
import re

import pytest
import torch
from compat_helpers import BACKENDS, Questions, accelerated_copy, assert_close, assert_same_gradients, leaf
from compat_helpers import check_against_the_library, check_compiled_like_the_library, skip_if_the_backend_lacks_it
from spline_cases import SPLINE_BACKENDS

nflows = pytest.importorskip("nflows")
from nflows import distributions, flows, transforms  # noqa: E402
from nflows.nn import nets  # noqa: E402
from nflows.utils import create_alternating_binary_mask  # noqa: E402

from nf_kernels.compat import Unsupported, accelerate  # noqa: E402
from nf_kernels.compat import nflows as fused  # noqa: E402


def _net(in_features, out_features):
    return nets.ResidualNet(in_features, out_features, hidden_features=16, num_blocks=2)


def halves_realnvp(features=6, couplings=4):
    """The benchmark's model: +-1 masks over halves, alternated (the op's "half" mask)."""
    layers = []
    for i in range(couplings):
        mask = torch.tensor([1] * (features // 2) + [-1] * (features - features // 2))
        layers.append(transforms.AffineCouplingTransform(mask if i % 2 else -mask, _net))
    return flows.Flow(transforms.CompositeTransform(layers), distributions.StandardNormal([features]))


MODELS = {
    # nflows' own SimpleRealNVP: alternating masks over features (a bool mask with a compact h), batch norm between.
    "simple-realnvp": lambda: flows.SimpleRealNVP(features=6, hidden_features=16, num_layers=4, num_blocks_per_layer=1,
                                                  batch_norm_between_layers=True),
    "simple-nice": lambda: flows.SimpleRealNVP(features=5, hidden_features=16, num_layers=4, num_blocks_per_layer=1,
                                               use_volume_preserving=True),
    "halves": halves_realnvp,
    "odd-halves": lambda: halves_realnvp(7),
}


def _model(name, dtype):
    torch.manual_seed(0)
    model = MODELS[name]().to(dtype)
    model.eval()  # batch norm with its running statistics: the same function for every batch
    return model


def _features(model) -> int:
    return model._distribution._shape[0]


# nflows' density direction is the transform's `forward` (and `log_prob`), its sampling `inverse` (and `sample`).
ASK = Questions(log_prob=lambda m, x: m.log_prob(x),
                inverse=lambda m, x: (m._transform.forward(x), m._transform.inverse(x)),
                sample=lambda m: m.sample(5))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_accelerated_model_computes_what_nflows_does(name, backend, dtype):
    model = _model(name, dtype)
    x = torch.randn(8, _features(model), dtype=dtype)
    check_against_the_library(model, backend, dtype, x, ASK, replaced=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_image_coupling_with_a_context(backend):
    """4-D inputs: the mask over channels, a convolutional transform net that reads a context."""
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.conv = torch.nn.Conv2d(in_channels + 1, out_channels, 3, padding=1)

        def forward(self, x, context):
            return self.conv(torch.cat([x, context.expand(-1, 1, *x.shape[2:])], 1))

    for mask in ([1, 0, 1, 1, 0], [0, 0, 1, 1]):
        layer = transforms.AffineCouplingTransform(torch.tensor(mask), Net).double()
        twin, _ = accelerated_copy(layer, backend)
        x = torch.randn(3, len(mask), 4, 5, dtype=torch.float64)
        context = torch.randn(3, 1, 1, 1, dtype=torch.float64)
        with skip_if_the_backend_lacks_it(backend):
            for direction in ("forward", "inverse"):
                ours, theirs = getattr(twin, direction)(x, context), getattr(layer, direction)(x, context)
                assert_close(ours[0], theirs[0], torch.float64, direction)
                assert_close(ours[1], theirs[1], torch.float64, direction + " logabsdet")


def test_drop_in_classes_take_nflows_constructors_and_check_inputs():
    for cls in (fused.AffineCouplingTransform, fused.AdditiveCouplingTransform):
        assert inspect.signature(cls) == inspect.signature(cls.replaces) and issubclass(cls, cls.replaces)
    layer = fused.AffineCouplingTransform([1, 0, 1, 0], _net)
    with pytest.raises(ValueError, match="expected 4 features"):
        layer(torch.randn(2, 5))
    with pytest.raises(ValueError, match="2-D or 4-D"):
        layer(torch.randn(2, 4, 3))


def test_an_unconditional_transform_is_not_supported():
    def unconditional(features):
        return transforms.PiecewiseLinearCDF(shape=[features])

    with pytest.raises(Unsupported, match="unconditional_transform"):
        fused.AffineCouplingTransform([1, 0, 1, 0], _net, unconditional_transform=unconditional)
    layer = transforms.AffineCouplingTransform([1, 0, 1, 0], _net, unconditional_transform=unconditional)
    report = accelerate(transforms.CompositeTransform([layer, transforms.ReversePermutation(4)]))
    assert not report.replaced
    reasons = {entry.path: entry.reason for entry in report.left_alone}
    assert "unconditional_transform" in reasons["_transforms.0"] and "not an affine or additive coupling" in reasons["_transforms.1"]


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compiles_whole_where_nflows_does(backend):
    model = _model("halves", torch.float32)
    check_compiled_like_the_library(model, lambda m, x: m.log_prob(x), torch.randn(8, 6), backend, "nflows")


# nflows' neural spline couplings: PiecewiseRationalQuadraticCouplingTransform with linear tails, on the spline
# backends. Its transform nets start near zero (an identity spline): the weights are perturbed so that the splines
# have bins of very different sizes, and a quarter of the inputs lie beyond tail_bound.
def _spline_coupling(mask, net=_net, **kwargs):
    options = dict(num_bins=5, tails="linear", tail_bound=2.0, min_bin_width=2e-3, min_bin_height=3e-3,
                   min_derivative=4e-3)  # fmt: skip
    return transforms.PiecewiseRationalQuadraticCouplingTransform(mask, net, **{**options, **kwargs})


def _perturbed(model, scale=0.3):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def spline_flow(features, masks):
    layers = [_spline_coupling(mask) for mask in masks]
    return _perturbed(flows.Flow(transforms.CompositeTransform(layers), distributions.StandardNormal([features])))


SPLINE_MODELS = {
    "nsf-alternating": lambda: spline_flow(5, [create_alternating_binary_mask(5, even=i % 2 == 0) for i in range(4)]),
    "nsf-halves": lambda: spline_flow(6, [torch.tensor([1, 1, 1, -1, -1, -1]) * (-1) ** i for i in range(4)]),
    "nsf-odd-halves": lambda: spline_flow(7, [torch.tensor([0, 0, 0, 1, 1, 1, 1]), torch.tensor([1, 1, 1, 1, 0, 0, 0]),
                                              torch.tensor([0, 0, 0, 1, 1, 1, 1]), torch.tensor([1, 0, 0, 1, 0, 1, 1])]),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
@pytest.mark.parametrize("name", list(SPLINE_MODELS))
def test_accelerated_spline_flow_computes_what_nflows_does(name, backend, dtype):
    torch.manual_seed(0)
    model = SPLINE_MODELS[name]().to(dtype)
    x = 1.6 * torch.randn(8, _features(model), dtype=dtype)
    twin, _ = check_against_the_library(model, backend, dtype, x, ASK, replaced=4, float32_gradients_to_truth=True)
    assert all(isinstance(layer, fused.PiecewiseRationalQuadraticCouplingTransform) for layer in twin._transform._transforms)


@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
@pytest.mark.parametrize("mask", [[1, 0, 1, 1, 0], [0, 0, 1, 1]], ids=["alternating", "halves"])
def test_image_spline_coupling(backend, mask):
    """4-D inputs with a ConvResidualNet (nflows divides by sqrt(hidden_channels)): values, log-dets, gradients."""
    torch.manual_seed(0)

    def conv_net(in_channels, out_channels):
        return nets.ConvResidualNet(in_channels, out_channels, hidden_channels=8, num_blocks=1)

    layer = _perturbed(_spline_coupling(torch.tensor(mask), conv_net).double(), 0.3)
    twin, _ = accelerated_copy(layer, backend)
    assert isinstance(twin, fused.PiecewiseRationalQuadraticCouplingTransform)
    x = 1.6 * torch.randn(2, len(mask), 3, 4, dtype=torch.float64)
    for direction in ("forward", "inverse"):
        xa, xb = leaf(x), leaf(x)
        theirs, ours = getattr(layer, direction)(xa), getattr(twin, direction)(xb)
        assert_close(ours[0], theirs[0], torch.float64, direction)
        assert_close(ours[1], theirs[1], torch.float64, direction + " logabsdet")
        for model, out, x_leaf in ((layer, theirs, xa), (twin, ours, xb)):
            model.zero_grad()
            (out[0].sin().sum() + out[1].sum()).backward()
        assert_same_gradients(layer, twin, xa, xb, torch.float64)


class _LinearNet(torch.nn.Linear):
    """A transform net with no hidden_features or hidden_channels attribute."""

    def forward(self, inputs, context=None):
        return super().forward(inputs)


def test_a_net_without_hidden_sizes_warns_as_nflows_does_and_is_still_computed_alike():
    torch.manual_seed(0)
    layer = _perturbed(_spline_coupling([1, 0, 1, 0], _LinearNet).double())
    x = 1.6 * torch.randn(6, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="unscaled"):
        twin, _ = accelerated_copy(layer, "reference")
    with pytest.warns(UserWarning):  # nflows' own warning
        theirs = layer(x)
    assert_close(twin(x)[0], theirs[0], torch.float64, "y")
    assert_close(twin(x)[1], theirs[1], torch.float64, "logabsdet")


@pytest.mark.parametrize("options, reason", [
    (dict(tails=None), "tails=None: the fused spline has linear tails"),
    (dict(apply_unconditional_transform=True), "unconditional_transform"),
    (dict(num_bins=4, min_bin_width=0.25), "min_bin_width must be >= 0 with min_bin_width \\* bins < 1"),
    (dict(min_derivative=0.0), "min_derivative must be > 0"),
    (dict(tail_bound=torch.tensor(3.0)), "bound must be a real number"),
])  # fmt: skip
def test_spline_couplings_the_op_cannot_take_are_refused_saying_why(options, reason):
    with pytest.raises(Unsupported, match=reason):
        fused.PiecewiseRationalQuadraticCouplingTransform([1, 0, 1, 0], _net, **{"tails": "linear", **options})
    report = accelerate(_spline_coupling([1, 0, 1, 0], **options))
    assert not report.replaced and re.search(reason, report.left_alone[0].reason)


def test_other_piecewise_couplings_are_left_alone_saying_why():
    layer = transforms.PiecewiseQuadraticCouplingTransform([1, 0, 1, 0], _net, tails="linear")
    report = accelerate(layer)
    assert not report.replaced and "the fused spline is rational-quadratic" in report.left_alone[0].reason


def test_the_spline_drop_in_takes_nflows_constructor():
    cls = fused.PiecewiseRationalQuadraticCouplingTransform
    assert inspect.signature(cls) == inspect.signature(cls.replaces) and issubclass(cls, cls.replaces)
