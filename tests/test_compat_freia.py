"""nf_kernels.compat.freia against FrEIA itself: invertible networks built with FrEIA's API, before and after
accelerate (tests/compat_helpers.py says what is compared). FrEIA has no distribution object: the density a model
defines is that of z = f(x) under a standard normal, with FrEIA's log_jac_det."""

import inspect

import pytest
import torch
from compat_helpers import BACKENDS, Questions, accelerated_copy, assert_close, skip_if_the_backend_lacks_it
from compat_helpers import check_against_the_library, check_compiled_like_the_library

Ff = pytest.importorskip("FrEIA.framework")
Fm = pytest.importorskip("FrEIA.modules")
from nf_kernels.compat import Unsupported, accelerate  # noqa: E402
from nf_kernels.compat import freia as fused  # noqa: E402


def mlp(dims_in, dims_out):
    return torch.nn.Sequential(torch.nn.Linear(dims_in, 16), torch.nn.ReLU(), torch.nn.Linear(16, dims_out))


def conv(channels_in, channels_out):
    return torch.nn.Sequential(torch.nn.Conv2d(channels_in, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, channels_out, 3, padding=1))  # fmt: skip


def inn(block, features=6, blocks=3, subnet=mlp, dims_c=None, **kwargs):
    shape = features if isinstance(features, tuple) else (features,)
    net = Ff.SequenceINN(*shape)
    for _ in range(blocks):
        net.append(block, subnet_constructor=subnet, **({"cond": 0, "cond_shape": dims_c} if dims_c else {}), **kwargs)
        if len(shape) == 1:
            net.append(Fm.PermuteRandom, seed=0)
    return net


MODELS = {
    "glow-atan": lambda: inn(Fm.GLOWCouplingBlock),
    "glow-tanh-odd": lambda: inn(Fm.GLOWCouplingBlock, features=5, clamp=1.5, clamp_activation="TANH"),
    "glow-sigmoid-split": lambda: inn(Fm.GLOWCouplingBlock, clamp_activation="SIGMOID", split_len=2),
    "rnvp": lambda: inn(Fm.RNVPCouplingBlock, features=5),
    "nice": lambda: inn(Fm.NICECouplingBlock),
    "allinone": lambda: inn(Fm.AllInOneBlock, features=5, permute_soft=True),
    "allinone-householder": lambda: inn(Fm.AllInOneBlock, learned_householder_permutation=2,
                                        reverse_permutation=True),  # fmt: skip
    "glow-images": lambda: inn(Fm.GLOWCouplingBlock, features=(4, 3, 5), subnet=conv),
    "one-sided": lambda: inn(Fm.AffineCouplingOneSided, features=5, clamp_activation="TANH"),
}


def _model(name, dtype):
    torch.manual_seed(0)
    return MODELS[name]().to(dtype)


def _log_density(net, x):
    """The density a FrEIA network defines under a standard normal, up to a constant: -(0.5 |z|^2 - log_jac_det)."""
    z, log_jac_det = net(x)
    return log_jac_det - 0.5 * z.square().flatten(1).sum(1)


# FrEIA's density direction is rev=False, its sampling rev=True; each returns (z, log_jac_det).
ASK = Questions(log_prob=_log_density, inverse=lambda net, x: (net(x), net(x, rev=True)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_accelerated_network_computes_what_freia_does(name, backend, dtype):
    model = _model(name, dtype)
    check_against_the_library(model, backend, dtype, torch.randn(8, *model.shapes[0], dtype=dtype), ASK, replaced=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conditional_blocks(backend):
    torch.manual_seed(0)
    model = inn(Fm.GLOWCouplingBlock, dims_c=(2,)).double()
    twin, report = accelerated_copy(model, backend)
    assert len(report.replaced) == 3
    x, c = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    with skip_if_the_backend_lacks_it(backend):
        assert_close(twin(x, c=[c])[0], model(x, c=[c])[0], torch.float64, "z given c")


@pytest.mark.parametrize("backend", BACKENDS)
def test_nice_returns_freias_zero_log_det(backend):
    block = Fm.NICECouplingBlock([(4,)], subnet_constructor=mlp)
    twin, _ = accelerated_copy(block, backend)
    with skip_if_the_backend_lacks_it(backend):
        (_,), jac = twin([torch.randn(3, 4)])
    assert jac == 0.0 and isinstance(jac, float)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conditional_affine_transform(backend):
    torch.manual_seed(0)
    block = Fm.ConditionalAffineTransform([(5,)], dims_c=[(2,), (1,)], subnet_constructor=mlp).double()
    twin, _ = accelerated_copy(block, backend)
    x, c = torch.randn(4, 5, dtype=torch.float64), [torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)]
    with skip_if_the_backend_lacks_it(backend):
        for rev in (False, True):
            (z,), jac = block([x], c=c, rev=rev)
            (twin_z,), twin_jac = twin([x], c=c, rev=rev)
            assert_close(twin_z, z, torch.float64, f"z rev={rev}")
            assert_close(twin_jac, jac, torch.float64, f"log_jac_det rev={rev}")


def test_drop_in_classes_take_freia_constructors():
    for cls in fused.DROP_INS.values():
        assert inspect.signature(cls) == inspect.signature(cls.replaces) and issubclass(cls, cls.replaces)


def test_what_cannot_be_matched_is_a_clear_error():
    with pytest.raises(Unsupported, match="custom clamp_activation"):
        fused.GLOWCouplingBlock([(4,)], subnet_constructor=mlp, clamp_activation=lambda u: u / (1 + u.abs()))
    with pytest.raises(Unsupported, match="gin_block"):
        fused.AllInOneBlock([(4,)], subnet_constructor=mlp, gin_block=True)
    with pytest.raises(Unsupported, match="clamp > 0"):
        fused.GLOWCouplingBlock([(4,)], subnet_constructor=mlp, clamp=0.0)
    report = accelerate(inn(Fm.GINCouplingBlock, blocks=1))
    reasons = {entry.path: entry.reason for entry in report.left_alone}
    assert not report.replaced and "GIN's volume-preserving" in reasons["module_list.0"]
    assert reasons["module_list.1"] == "not an affine or additive coupling: nothing to fuse"


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compiles_whole_where_freia_does(backend):
    model = _model("glow-atan", torch.float32)
    check_compiled_like_the_library(model, lambda net, x: net(x), torch.randn(8, 6), backend, "FrEIA")
