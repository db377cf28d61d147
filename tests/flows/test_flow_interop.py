"""torch.distributions interop, and the dequantization / bits-per-dimension helpers."""

import math

import torch
from flows_helpers import IMAGE_SHAPE, tiny_model
from torch.distributions import Independent, Normal, TransformedDistribution

from nf_kernels.flows import FlowTransform, bits_per_dim, dequantize


def test_flow_transform_inside_transformed_distribution():
    flow = tiny_model("realnvp", IMAGE_SHAPE)  # multi-scale: the latent is a flat vector
    latent_shape = flow.base.shape
    base = Independent(Normal(torch.zeros(latent_shape), torch.ones(latent_shape)), len(latent_shape))
    distribution = TransformedDistribution(base, [FlowTransform(flow)])
    x = torch.rand(3, *IMAGE_SHAPE)
    torch.testing.assert_close(distribution.log_prob(x), flow.log_prob(x))
    with torch.no_grad():
        samples = distribution.sample((4,))
    assert samples.shape == (4, *IMAGE_SHAPE)
    assert torch.isfinite(distribution.log_prob(samples)).all()
    assert distribution.event_shape == IMAGE_SHAPE


def test_flow_transform_composes_with_other_transforms():
    from torch.distributions.transforms import AffineTransform

    flow = tiny_model("glow", (2,))
    base = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    shifted = TransformedDistribution(base, [FlowTransform(flow), AffineTransform(1.0, 2.0, event_dim=1)])
    y = torch.randn(5, 2)
    expected = flow.log_prob((y - 1.0) / 2.0) - 2 * math.log(2.0)  # change of variables by hand
    torch.testing.assert_close(shifted.log_prob(y), expected)


def test_dequantize_is_uniform_within_each_level():
    levels = torch.randint(0, 256, (1000,), generator=torch.Generator().manual_seed(0))
    x = dequantize(levels, 256, generator=torch.Generator().manual_seed(1))
    assert x.dtype == torch.float32 and (x >= 0).all() and (x < 1).all()
    assert torch.equal((x * 256).floor().long(), levels)
    assert torch.equal(dequantize(torch.full((3,), 255), 256) < 1, torch.ones(3, dtype=torch.bool))


def test_bits_per_dim_follows_the_spec_formula():
    log_prob, dims = torch.tensor([-100.0, 50.0]), 64
    expected = -(log_prob - dims * math.log(256)) / (dims * math.log(2))
    torch.testing.assert_close(bits_per_dim(log_prob, dims), expected)
    torch.testing.assert_close(bits_per_dim(torch.tensor([0.0]), 10, levels=2), torch.tensor([1.0]))
