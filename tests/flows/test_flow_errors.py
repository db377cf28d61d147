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
    LabelEmbedding,
    MODEL_SIZES,
    MODELS,
    build_model,
    dequantize,
    glow,
    nice,
    realnvp,
    sizes_used,
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
        (lambda: AffineCoupling((4,), scale="tanh", clamp=float("inf")), r"clamp must be > 0 and finite, got inf"),
        (lambda: AffineCoupling((4,), scale="none"), r"'exp', 'tanh', 'atan', 'sigmoid'.*additive"),
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


@pytest.mark.parametrize(
    "name, shape, sizes, message",
    [
        ("nice", (2,), dict(scale="exp"), r"nice has no scale\. On vectors \(2,\) nice takes num_layers \(besides"),
        ("nice", (1, 4, 4), dict(clamp=1.0, num_steps=2), r"nice has no num_steps, clamp\."),
        ("nice", (2,), dict(num_scales=2, final_steps=1), r"nice has no num_scales, final_steps"),
        ("glow", (2,), dict(num_layers=3), r"glow has no num_layers\. On vectors \(2,\) glow takes num_steps \("),
        ("glow", (1, 4, 4), dict(scale="exp", clamp=3.0), r"glow has no scale, clamp\. On images.*num_scales, num_steps"),
        ("glow", (2,), dict(num_scales=2), r"glow on vectors \(2,\) does not use num_scales"),
        ("realnvp", (1, 4, 4), dict(num_layers=8), r"realnvp on images \(1, 4, 4\) does not use num_layers\."),
        ("realnvp", (2,), dict(num_steps=2, final_steps=2), r"realnvp on vectors \(2,\) does not use num_steps, final"),
    ],
)
def test_sizes_a_model_does_not_use_are_errors_not_ignored(name, shape, sizes, message):
    with pytest.raises(ValueError, match=message):
        build_model(name, shape, hidden=8, depth=1, **sizes)
    with pytest.raises(ValueError, match=message):  # the builders themselves, not only build_model
        {"nice": nice, "realnvp": realnvp, "glow": glow}[name](shape, hidden=8, depth=1, **sizes)


def test_every_size_a_model_uses_is_accepted():
    for name in MODELS:
        for shape in [(2,), (1, 4, 4)]:
            used = sizes_used(name, shape)
            given = {k: v for k, v in dict(num_layers=2, num_scales=1, num_steps=1, final_steps=1, scale="exp",
                                           clamp=1.0).items() if k in used}  # fmt: skip
            assert build_model(name, shape, hidden=8, depth=1, **given).sample_shape == shape
            assert set(sizes_used(name, shape)) <= set(MODEL_SIZES)


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


@pytest.fixture(scope="module")
def conditional_flow():
    return build_model("realnvp", (2,), num_layers=2, hidden=8, depth=1, num_classes=3, backend="reference")


def test_sample_arguments_are_checked(conditional_flow):
    with pytest.raises(TypeError, match=r"context must be a tensor .*torch.tensor\(3\); got int 3"):
        conditional_flow.sample(4, 3)  # was an AttributeError
    for bad in (-1, -5):
        with pytest.raises(ValueError, match=rf"num_samples must be an int >= 0, got {bad}"):
            conditional_flow.sample(bad)
        with pytest.raises(ValueError, match="num_samples"):
            StandardNormal((2,)).sample(bad)
    for bad in (2.5, "4", True, None):
        with pytest.raises(TypeError, match=r"num_samples must be an int >= 0, got"):
            conditional_flow.sample(bad, torch.tensor(1))
    assert conditional_flow.sample(0, torch.tensor(1)).shape == (0, 2)


def test_a_single_label_is_broadcast_to_the_batch(conditional_flow):
    """The docs promise it; log_prob used to reject it ("context must have shape (4, 16), got (16,)")."""
    x = torch.randn(4, 2)
    every = conditional_flow.log_prob(x, torch.full((4,), 2))
    assert torch.equal(conditional_flow.log_prob(x, torch.tensor(2)), every)
    assert torch.equal(conditional_flow.log_prob(x, torch.tensor([2])), every)
    assert conditional_flow.inverse(torch.randn(4, 2), torch.tensor(2))[0].shape == (4, 2)
    with pytest.raises(ValueError, match=r"context must have one entry per sample \(4\) .*got shape \(3,\)"):
        conditional_flow.log_prob(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"one entry per sample \(5\)"):
        conditional_flow.sample(5, torch.tensor([0, 1]))


@pytest.mark.parametrize("labels", [[0, 3], [-1, 0], [7, 7]])
def test_labels_outside_the_classes_are_a_value_error(conditional_flow, labels):
    # Was a raw IndexError ("index out of range in self"), a device-side assert on a GPU.
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 3\) \(the model has num_classes=3\)"):
        conditional_flow.log_prob(torch.randn(2, 2), torch.tensor(labels))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_labels_that_are_not_integers_are_a_type_error(conditional_flow, dtype):
    with pytest.raises(TypeError, match=r"context holds class labels: an integer tensor .*\[0, 3\), got dtype"):
        conditional_flow.log_prob(torch.randn(2, 2), torch.tensor([0, 1]).to(dtype))
    assert LabelEmbedding(3, 4)(torch.tensor([0, 2], dtype=torch.int32)).shape == (2, 4)  # any integer dtype is fine


def test_data_of_another_dtype_or_device_is_a_clear_error():
    """A float64 or integer batch used to fail deep inside a convolution ("Input type (double) and bias type...")."""
    flow = build_model("realnvp", (1, 4, 4), num_scales=1, num_steps=1, hidden=8, depth=1, backend="reference")
    with pytest.raises(TypeError, match=r"x is torch.float64 but the model is torch.float32.*flow.to\(torch.float64\)"):
        flow.log_prob(torch.rand(2, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"x must be a floating tensor \(torch.float32, like the model\).*dequantize"):
        flow.log_prob(torch.randint(0, 256, (2, 1, 4, 4)))
    with pytest.raises(TypeError, match=r"z is torch.float16 but the model is torch.float32"):
        flow.inverse(torch.randn(2, 1, 4, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"x is on meta but the model is on cpu"):
        flow.log_prob(torch.rand(2, 1, 4, 4, device="meta"))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        flow.log_prob([[0.5] * 16])
    assert flow.double().log_prob(torch.rand(2, 1, 4, 4, dtype=torch.float64)).dtype == torch.float64
