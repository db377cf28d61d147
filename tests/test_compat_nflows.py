"""nf_kernels.compat.nflows against nflows itself: models built with nflows' API, before and after accelerate
(tests/compat_helpers.py says what is compared)."""

import inspect

import pytest
import torch
from compat_helpers import BACKENDS, Questions, accelerated_copy, assert_close, skip_if_the_backend_lacks_it
from compat_helpers import check_against_the_library, check_compiled_like_the_library

nflows = pytest.importorskip("nflows")
from nflows import distributions, flows, transforms  # noqa: E402
from nflows.nn import nets  # noqa: E402

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
