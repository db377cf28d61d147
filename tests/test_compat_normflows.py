"""nf_kernels.compat.normflows against normflows itself: models built with normflows' API, before and after
accelerate (tests/compat_helpers.py says what is compared)."""

import inspect

import pytest
import torch
from compat_helpers import BACKENDS, Questions, accelerated_copy, assert_close, skip_if_the_backend_lacks_it
from compat_helpers import check_against_the_library, check_compiled_like_the_library

nf = pytest.importorskip("normflows")
from nf_kernels.compat import Unsupported, accelerate  # noqa: E402
from nf_kernels.compat import normflows as fused  # noqa: E402


def realnvp(features: int, scale_map: str = "exp", scale: bool = True, split_mode: str = "channel", couplings=4):
    """normflows' README RealNVP: affine coupling blocks with MLP param maps, a swap permutation after each."""
    flows = []
    for _ in range(couplings):
        first = {"channel": (features + 1) // 2, "channel_inv": features // 2}.get(split_mode, features // 2)
        out = (2 if scale else 1) * (features - first if split_mode.startswith("channel") else features // 2)
        flows += [nf.flows.AffineCouplingBlock(nf.nets.MLP([first, 16, 16, out]), scale, scale_map, split_mode),
                  nf.flows.Permute(features, mode="swap")]  # fmt: skip
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(features), flows)


def masked_realnvp(features: int, couplings=4):
    """normflows' other RealNVP: MaskedAffineFlow with separate s and t networks and alternating masks, ActNorm."""
    b = torch.tensor([i % 2 for i in range(features)], dtype=torch.float32)
    flows = []
    for i in range(couplings):
        s, t = nf.nets.MLP([features, 16, features]), nf.nets.MLP([features, 16, features])
        flows += [nf.flows.MaskedAffineFlow(b if i % 2 == 0 else 1 - b, t, s), nf.flows.ActNorm(features)]
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(features), flows)


MODELS = {
    "realnvp-even": lambda: realnvp(6),
    "realnvp-odd-sigmoid": lambda: realnvp(5, "sigmoid"),
    "realnvp-channel_inv-sigmoid_inv": lambda: realnvp(5, "sigmoid_inv", split_mode="channel_inv"),
    "realnvp-checkerboard": lambda: realnvp(6, split_mode="checkerboard"),
    "nice": lambda: realnvp(6, scale=False, split_mode="checkerboard_inv"),
    "masked": lambda: masked_realnvp(6),
}


def _model(name, dtype):
    torch.manual_seed(0)
    model = MODELS[name]().to(dtype)
    with torch.no_grad():  # out of the identity: ActNorm initialized, and every coupling doing something
        model.log_prob(torch.randn(16, model.q0.shape[0], dtype=dtype))
    return model


# normflows' sampling is `forward` (and `sample`), its density direction `inverse` (and `log_prob`).
ASK = Questions(log_prob=lambda m, x: m.log_prob(x),
                inverse=lambda m, x: (m.inverse_and_log_det(x), m.forward_and_log_det(x)),
                sample=lambda m: m.sample(5))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_accelerated_model_computes_what_normflows_does(name, backend, dtype):
    model = _model(name, dtype)
    x = torch.randn(8, model.q0.shape[0], dtype=dtype)
    _, report = check_against_the_library(model, backend, dtype, x, ASK, replaced=4)
    assert {entry.path for entry in report.left_alone} == {f"flows.{i}" for i in range(1, 8, 2)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_glow_image_model(backend):
    """GlowBlock (its default scale_map 'sigmoid', channel split, ActNorm, 1x1 convolution) on images."""
    torch.manual_seed(0)
    flows = [nf.flows.GlowBlock(4, 8, split_mode=mode, init_zeros=False) for mode in ("channel", "checkerboard")]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian((4, 4, 6)), flows).double()
    x = torch.randn(3, 4, 4, 6, dtype=torch.float64)
    _, report = check_against_the_library(model, backend, torch.float64, x, ASK, replaced=2)
    assert [entry.path for entry in report.replaced] == ["flows.0.flows.0", "flows.1.flows.0"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_coupling_on_a_split_list(backend):
    """AffineCoupling alone takes and returns [z1, z2]."""
    torch.manual_seed(0)
    layer = nf.flows.AffineCoupling(nf.nets.MLP([3, 8, 6]), scale_map="sigmoid").double()
    twin, _ = accelerated_copy(layer, backend)
    z = [torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)]
    with skip_if_the_backend_lacks_it(backend):
        for direction in ("forward", "inverse"):
            (a1, a2), log_det = getattr(layer, direction)(z)
            (b1, b2), twin_log_det = getattr(twin, direction)(z)
            assert b1 is z[0]
            assert_close(b2, a2, torch.float64, direction)
            assert_close(twin_log_det, log_det, torch.float64, direction + " log-det")


def test_drop_in_classes_take_normflows_constructors():
    for cls in (fused.AffineCouplingBlock, fused.AffineCoupling, fused.MaskedAffineFlow):
        assert inspect.signature(cls) == inspect.signature(cls.replaces)
        assert issubclass(cls, cls.replaces)
    block = fused.AffineCouplingBlock(nf.nets.MLP([2, 8, 4]), scale_map="sigmoid", split_mode="channel_inv")
    assert isinstance(block, nf.flows.AffineCouplingBlock)
    assert list(block.state_dict()) == list(nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 8, 4])).state_dict())


def test_what_cannot_be_matched_is_a_clear_error_at_construction():
    with pytest.raises(Unsupported, match="scale_map='softplus' is not one of"):
        fused.AffineCouplingBlock(nf.nets.MLP([2, 8, 4]), scale_map="softplus")
    with pytest.raises(Unsupported, match="mask b that is not all 0 and 1"):
        fused.MaskedAffineFlow(torch.tensor([0.5, 1.0]), nf.nets.MLP([2, 4, 2]))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(4), [
        nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 8, 4]), scale_map="softplus")])  # fmt: skip
    report = nf_kernels_accelerate(model)
    assert not report.replaced and "softplus" in report.left_alone[0].reason


def nf_kernels_accelerate(model):
    import nf_kernels.compat

    return nf_kernels.compat.accelerate(model)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compiles_whole_where_normflows_does(backend):
    model = _model("realnvp-odd-sigmoid", torch.float32)
    check_compiled_like_the_library(model, lambda m, x: m.log_prob(x), torch.randn(8, 5), backend, "normflows")


def test_spline_couplings_are_left_alone_saying_why():
    """normflows fixes apply_unconditional_transform=True in both spline couplings: no op computes that."""
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(4), [
        nf.flows.CoupledRationalQuadraticSpline(4, 1, 8),
        nf.flows.CircularCoupledRationalQuadraticSpline(4, 1, 8, ind_circ=[0])])  # fmt: skip
    report = accelerate(flow)
    assert not report.replaced
    reasons = {entry.path: entry.reason for entry in report.left_alone}
    assert set(reasons) == {"flows.0", "flows.1"}, report
    assert "unconditional spline too (apply_unconditional_transform=True" in reasons["flows.0"]
    assert "circular tails" in reasons["flows.1"] and "apply_unconditional_transform=True" in reasons["flows.1"]
