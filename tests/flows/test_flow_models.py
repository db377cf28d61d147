"""NICE, RealNVP, Glow and NSF: densities, sampling, state_dict, conditioning, and agreement across backends."""

import io
import math

import pytest
import torch
from conftest import CPU_BACKENDS, TOLERANCE
from flows_helpers import IMAGE_SHAPE, VECTOR_SHAPE, rel_err, tiny_model, tiny_sizes

from nf_kernels import _dispatch
from nf_kernels.flows import MODELS, build_model

SHAPES = [VECTOR_SHAPE, IMAGE_SHAPE]


@pytest.mark.parametrize("name", MODELS)
def test_2d_density_integrates_to_one(name):
    flow = tiny_model(name, (2,), num_layers=4, num_steps=2, hidden=16).double()
    edge, n = 8.0, 401
    axis = torch.linspace(-edge, edge, n, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = flow.log_prob(grid).exp().reshape(n, n)
    mass = torch.trapezoid(torch.trapezoid(density, axis), axis).item()
    assert abs(mass - 1) <= 1e-2


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_log_prob_is_base_density_plus_summed_log_dets(name, shape):
    flow = tiny_model(name, shape)
    x = torch.rand(3, *shape)
    summed, z = torch.zeros(3), x
    for layer in flow.layers:  # layer by layer, outside Flow
        z, layer_logdet = layer(z)
        summed += layer_logdet
    torch.testing.assert_close(flow.log_prob(x), flow.base.log_prob(z) + summed)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_sample_shapes_and_finite_log_prob(name, shape):
    flow = tiny_model(name, shape)
    assert flow.sample_shape == shape
    with torch.no_grad():
        x = flow.sample(5)
        assert x.shape == (5, *shape)
        assert torch.isfinite(flow.log_prob(x)).all()
        z, _ = flow(x)  # the latent of a sample maps back onto it
        torch.testing.assert_close(flow.inverse(z)[0], x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_state_dict_round_trip_gives_identical_log_prob(name, shape):
    flow = tiny_model(name, shape, seed=1)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    fresh = build_model(name, shape, backend="reference", **tiny_sizes(name, shape))
    fresh.load_state_dict(torch.load(buffer))
    fresh.eval()
    x = torch.rand(4, *shape)
    assert torch.equal(fresh.log_prob(x), flow.log_prob(x))


def test_actnorm_initialization_survives_a_state_dict_round_trip():
    flow = build_model("glow", VECTOR_SHAPE, backend="reference", **tiny_sizes("glow", VECTOR_SHAPE))
    flow.log_prob(torch.randn(16, *VECTOR_SHAPE) * 5)  # training mode: data-dependent init happens here
    fresh = build_model("glow", VECTOR_SHAPE, backend="reference", **tiny_sizes("glow", VECTOR_SHAPE))
    fresh.load_state_dict(flow.state_dict())
    x = torch.randn(4, *VECTOR_SHAPE)
    assert torch.equal(fresh.log_prob(x), flow.log_prob(x))  # fresh is in training mode: it must not re-init


def _fused_model_backends(name):
    """The fused backends that run here and compute every coupling of model `name` (splines for "nsf")."""
    fused = [b for b in CPU_BACKENDS if b != "reference"]
    return [b for b in fused if name != "nsf" or _dispatch.why_spline_unsupported(b) is None]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name, backend", [(n, b) for n in MODELS for b in _fused_model_backends(n)])
def test_every_backend_gives_the_reference_log_prob(name, shape, backend):
    reference = tiny_model(name, shape, backend="reference")
    fused = tiny_model(name, shape, backend=backend)
    x = torch.rand(2, *shape)
    expected = reference.log_prob(x)
    assert rel_err(fused.log_prob(x), expected) <= TOLERANCE[torch.float32]
    loss = -fused.log_prob(x).sum()
    loss.backward()  # the fused backward runs too
    assert all(torch.isfinite(p.grad).all() for p in fused.parameters() if p.grad is not None)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backend_is_chosen_per_layer(backend):
    flow = build_model("realnvp", VECTOR_SHAPE, backend=backend, **tiny_sizes("realnvp", VECTOR_SHAPE))
    assert {layer.backend for layer in flow.layers} == {backend}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_class_conditional_models_depend_on_the_label(name, shape):
    flow = tiny_model(name, shape, num_classes=3)
    x = torch.rand(2, *shape)
    labels = torch.tensor([0, 2])
    assert not torch.allclose(flow.log_prob(x, labels), flow.log_prob(x, labels.flip(0)))
    samples = flow.sample(4, torch.tensor(1))
    assert samples.shape == (4, *shape)
    assert torch.isfinite(flow.log_prob(samples, torch.ones(4, dtype=torch.long))).all()
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(x)


def test_default_sizes_build_for_the_cli_shapes():
    for name in MODELS:
        for shape in [(2,), (1, 8, 8), (3, 32, 32)]:
            flow = build_model(name, shape)
            assert flow.sample_shape == shape
            assert math.prod(flow.base.shape) == math.prod(shape)


@pytest.mark.parametrize("name", MODELS)
def test_every_coupling_goes_through_the_fused_op_with_the_model_backend(name, monkeypatch):
    """No layer re-implements the coupling math: each coupling layer calls the functional op once per pass."""
    from nf_kernels.flows import AdditiveCoupling, AffineCoupling, SplineCoupling
    from nf_kernels.flows import coupling as coupling_module

    calls = []
    for op_name in ("affine_coupling", "additive_coupling", "spline_coupling"):
        original = getattr(coupling_module.functional, op_name)

        def spy(*args, _original=original, **kwargs):
            calls.append(kwargs["backend"])
            return _original(*args, **kwargs)

        monkeypatch.setattr(coupling_module.functional, op_name, spy)
    flow = tiny_model(name, IMAGE_SHAPE, backend="reference")
    couplings = sum(isinstance(m, (AffineCoupling, AdditiveCoupling, SplineCoupling)) for m in flow.modules())
    flow.log_prob(torch.rand(2, *IMAGE_SHAPE))
    assert calls == ["reference"] * couplings and couplings > 0
    calls.clear()
    flow.sample(2)
    assert calls == ["reference"] * couplings


@pytest.mark.parametrize("name, backend", [("realnvp", b) for b in _fused_model_backends("realnvp")]
                         + [("nsf", b) for b in _fused_model_backends("nsf") + ["reference"]])
def test_memory_saving_with_fused_backends(name, backend):
    flow = tiny_model(name, IMAGE_SHAPE, backend=backend)
    x = torch.rand(2, *IMAGE_SHAPE)
    grads = []
    for memory_saving in (False, True):
        flow.memory_saving = memory_saving
        grads.append(torch.autograd.grad(-flow.log_prob(x).mean(), list(flow.parameters())))
    for standard, saving in zip(*grads):
        assert rel_err(saving, standard) <= 1e-5


def test_flow_accepts_a_base_without_a_shape():
    from nf_kernels.flows import AffineCoupling, Flow

    class Isotropic(torch.nn.Module):  # a user's own base: log_prob and sample, no `shape`
        def log_prob(self, z):
            return torch.distributions.Normal(0.0, 2.0).log_prob(z).sum(1)

        def sample(self, num_samples, generator=None):
            return 2.0 * torch.randn(num_samples, 4, generator=generator)

    flow = Flow([AffineCoupling((4,), hidden=8)], Isotropic())
    assert flow.sample(3).shape == (3, 4)
    x = torch.randn(3, 4)
    torch.testing.assert_close(flow.log_prob(x), Isotropic().log_prob(x))  # identity coupling at init


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("base", ["normal", "logistic"])
def test_base_densities_and_their_gradients_match_torch_distributions(base, shape):
    """The base log-density is computed per sample in one reduction; it must stay the sum of the elements' densities."""
    from nf_kernels.flows import StandardLogistic, StandardNormal

    z = (torch.randn(5, *shape, dtype=torch.float64) * 3).requires_grad_(True)
    if base == "normal":
        ours, element = StandardNormal(shape), torch.distributions.Normal(0.0, 1.0)
    else:
        uniform = torch.distributions.Uniform(torch.tensor(0.0, dtype=torch.float64), 1.0)
        transforms = [torch.distributions.SigmoidTransform().inv]
        ours, element = StandardLogistic(shape), torch.distributions.TransformedDistribution(uniform, transforms)
    log_prob, expected = ours.log_prob(z), element.log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(log_prob, expected, rtol=1e-12, atol=1e-12)
    weights = torch.randn(5, dtype=torch.float64)
    grad, expected_grad = (torch.autograd.grad((v * weights).sum(), z)[0] for v in (log_prob, expected))
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert ours.log_prob(torch.zeros(0, *shape)).shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_squared_norm_function_is_vecdots_bits(dtype):
    """A large latent's |z|^2 goes through a function with a one-pass backward; values and gradients are vecdot's to
    the bit, its second derivative and vmap work, and a small latent, compile and forward-mode AD take vecdot."""
    from nf_kernels.flows.distributions import _SQUARED_NORM_MIN_ELEMENTS, _SquaredNorm, squared_norm

    z = (torch.randn(7, _SQUARED_NORM_MIN_ELEMENTS // 7 + 3, dtype=dtype) * 3).requires_grad_(True)
    weights = torch.randn(7, dtype=dtype)
    got = squared_norm(z)
    assert "_SquaredNorm" in got.grad_fn.name()
    want = torch.linalg.vecdot(z, z)
    assert torch.equal(got, want)
    assert torch.equal(*(torch.autograd.grad(v, z, weights)[0] for v in (got, want)))
    assert "_SquaredNorm" not in squared_norm(z[:, :5]).grad_fn.name()
    # Where 2 g overflows or g z is subnormal too (float32): vecdot adds g z to itself, the function doubles it.
    if dtype == torch.float32:
        for g, value in ((3e38, 0.1), (1.7e-20, 3.3e-21)):
            edge = torch.full_like(z, value).requires_grad_(True)
            assert torch.equal(*(torch.autograd.grad(f(edge), edge, torch.full((7,), g))[0]
                                 for f in (squared_norm, lambda v: torch.linalg.vecdot(v, v))))  # fmt: skip
    small = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(_SquaredNorm.apply, (small,))
    torch.testing.assert_close(torch.func.vmap(_SquaredNorm.apply)(small.detach()[:, None]), (small * small).sum(1, keepdim=True))
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(z.detach(), torch.ones_like(z))
        tangent = torch.autograd.forward_ad.unpack_dual(squared_norm(dual)).tangent
    torch.testing.assert_close(tangent, 2 * z.detach().sum(1))
