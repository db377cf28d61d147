"""Bad configurations fail at construction with a clear message, not deep inside a kernel."""

import pytest
import torch
from torch import nn

from nf_kernels.flows import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    Flow,
    Invertible1x1Conv,
    MLP,
    MultiScaleSplit,
    ResNetConditioner,
    ReversePermutation,
    Squeeze,
    StandardNormal,
    bits_per_dim,
    build_model,
    dequantize,
)


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: Squeeze(input_shape=(3, 5, 4)), r"divisible by 2.*\(3, 5, 4\)"),
        (lambda: Squeeze(input_shape=(3, 4)), r"\(C, H, W\)"),
        (lambda: build_model("realnvp", (1, 6, 6), num_scales=3), r"divisible by 4"),
        (lambda: build_model("glow", (3, 6, 6), num_scales=2), r"divisible by 4"),
        (lambda: build_model("glow", (3, 8, 8), num_scales=0), r"num_scales must be >= 1"),
        (lambda: build_model("flowpp", (2,)), r"unknown model 'flowpp'.*'nice', 'realnvp', 'glow'"),
        (lambda: build_model("nice", (1,)), r"D >= 2"),
        (lambda: build_model("nice", (2, 3)), r"vectors \(D,\) or images \(C, H, W\)"),
        (lambda: build_model("realnvp", (2,), backend="gpu"), r"unknown backend 'gpu'"),
        (lambda: AffineCoupling((1, 4, 4)), r"mask='half'.*at least 2 channels"),
        (lambda: AffineCoupling((4,), mask="checkerboard"), r"needs image samples"),
        (lambda: AffineCoupling((4,), mask="stripes"), r"unknown mask 'stripes'"),
        (lambda: AffineCoupling((4,), mask=torch.ones(5, dtype=torch.bool)), r"sample shape \(4,\)"),
        (lambda: AffineCoupling((4,), scale="softplus"), r"unknown scale 'softplus'.*'exp'"),
        (lambda: AffineCoupling((4,), clamp=0.0), r"clamp must be > 0"),
        (lambda: AffineCoupling((4,), conditioner=nn.Linear(2, 3)), r"maps samples of shape \(2,\) to \(3,\).*needs \(4,\)"),
        (lambda: AdditiveCoupling((4,), conditioner=nn.Linear(3, 2)), r"conditioner failed"),
        (lambda: AffineCoupling((3, 4, 4), conditioner=nn.Conv2d(1, 2, 1)), r"to \(2, 4, 4\).*needs \(4, 4, 4\)"),
        (lambda: Flow([Squeeze()], StandardNormal((3, 4, 4))), r"\(12, 2, 2\).*base distribution is over \(3, 4, 4\)"),
        (lambda: Flow([AffineCoupling((4,)), ActNorm(3)], StandardNormal((4,))), r"ActNorm\(3\)"),
        (lambda: Flow([AffineCoupling((4,)), AffineCoupling((5,))], StandardNormal((4,))), r"layer 1 .*\(5,\).*\(4,\)"),
        (lambda: Flow([ReversePermutation(4)], StandardNormal((5,))), r"ReversePermutation\(4\)"),
        (lambda: Flow([Invertible1x1Conv(2)], StandardNormal((3,))), r"Invertible1x1Conv\(2\)"),
        (lambda: MultiScaleSplit((1, 4, 4)), r"at least 2 channels"),
        (lambda: build_model("realnvp", (2,), num_classes=0), r"num_classes"),
        (lambda: MLP(2, 4, hidden=0), r"MLP sizes out of range: hidden=0"),
        (lambda: ResNetConditioner(2, 4, num_blocks=-1), r"num_blocks=-1"),
    ],
)
def test_bad_configuration_raises_at_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_misspelled_model_option_is_an_error_not_ignored():
    with pytest.raises(TypeError, match=r"unknown option\(s\) hiden.*valid options are .*hidden"):
        build_model("glow", (2,), hiden=8)
    build_model("nice", (2,), num_scales=3, num_steps=2, hidden=8)  # other models' sizes are fine


def test_wrong_input_shape_at_call_names_both_shapes():
    flow = build_model("realnvp", (1, 4, 4), num_scales=1, num_steps=1, hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*\(2, 1, 4, 5\)"):
        flow.log_prob(torch.rand(2, 1, 4, 5))
    with pytest.raises(ValueError, match=r"context_features"):
        AffineCoupling((4,), hidden=8, context_features=3)(torch.randn(2, 4))


def test_context_given_to_an_unconditional_model_is_an_error():
    flow = build_model("nice", (2,), hidden=8)
    with pytest.raises(ValueError, match="without context_features"):
        flow.log_prob(torch.randn(3, 2), torch.randn(3, 4))


def test_helpers_reject_bad_values():
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        dequantize(torch.tensor([256]), 256)
    with pytest.raises(ValueError, match="integer"):
        dequantize(torch.tensor([0.5]), 256)
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(torch.zeros(1), 0)
