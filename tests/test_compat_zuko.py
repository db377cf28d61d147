"""nf_kernels.compat.zuko against zuko itself: flows built with zuko's API, before and after accelerate
(tests/compat_helpers.py says what is compared)."""

import functools
import inspect

import pytest
import torch
from compat_helpers import BACKENDS, Questions, accelerated_copy, assert_close, skip_if_the_backend_lacks_it
from compat_helpers import check_against_the_library, check_compiled_like_the_library

zuko = pytest.importorskip("zuko")
from nf_kernels.compat import Unsupported, accelerate  # noqa: E402
from nf_kernels.compat import zuko as fused  # noqa: E402


def halves_flow(features=6, transforms=4, context=0, **kwargs):
    """RealNVP on alternating halves (the benchmark's model; zuko's RealNVP fixes checkered masks)."""
    halves = torch.arange(features) < features // 2
    layers = [zuko.flows.GeneralCouplingTransform(features, context, mask=halves if i % 2 else ~halves, **kwargs)
              for i in range(transforms)]  # fmt: skip
    base = zuko.flows.UnconditionalDistribution(zuko.distributions.DiagNormal, torch.zeros(features),
                                                torch.ones(features), buffer=True)  # fmt: skip
    return zuko.flows.Flow(layers, base)


MODELS = {
    "realnvp": lambda: zuko.flows.RealNVP(5, transforms=4, hidden_features=(16, 16)),
    "realnvp-randmask-context": lambda: zuko.flows.RealNVP(6, context=3, transforms=4, randmask=True),
    "halves": lambda: halves_flow(6),
    "halves-slope": lambda: halves_flow(7, univariate=functools.partial(zuko.transforms.MonotonicAffineTransform,
                                                                         slope=1e-2)),
    "nice": lambda: zuko.flows.NICE(6, transforms=4, univariate=zuko.transforms.AdditiveTransform, shapes=((),)),
}


def _model(name, dtype):
    torch.manual_seed(0)
    return MODELS[name]().to(dtype)


def _context(model, dtype, batch=8):
    features = model.transform.transforms[0].hyper[0].in_features - int(model.transform.transforms[0].mask.sum())
    return torch.randn(batch, features, dtype=dtype) if features else None


def _questions(c) -> Questions:
    """zuko's density direction is the transform (log_prob), sampling its `inv` (rsample), for the context c."""

    def inverse(flow, x):
        layer = flow.transform.transforms[0](c)
        return layer.inv(x), layer.inv.log_abs_det_jacobian(x, layer.inv(x)), layer.call_and_ladj(x)

    return Questions(log_prob=lambda flow, x: flow(c).log_prob(x), inverse=inverse,
                     sample=lambda flow: (flow(c).rsample(), flow(c).rsample_and_log_prob()))  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_accelerated_flow_computes_what_zuko_does(name, backend, dtype):
    model = _model(name, dtype)
    x = torch.randn(8, model.transform.transforms[0].mask.numel(), dtype=dtype)
    _, report = check_against_the_library(model, backend, dtype, x, _questions(_context(model, dtype)), replaced=4)
    assert not report.left_alone


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_dims_before_the_features(backend):
    model = _model("halves", torch.float64)
    twin, _ = accelerated_copy(model, backend)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    with skip_if_the_backend_lacks_it(backend):
        assert_close(twin().log_prob(x), model().log_prob(x), torch.float64, "log_prob of [2, 3, 6]")


def test_drop_in_class_takes_zuko_constructor():
    cls = fused.GeneralCouplingTransform
    assert inspect.signature(cls) == inspect.signature(cls.replaces) and issubclass(cls, cls.replaces)


def test_other_univariates_are_a_clear_error():
    with pytest.raises(Unsupported, match="MonotonicRQSTransform.*only MonotonicAffineTransform and AdditiveTransform"):
        fused.GeneralCouplingTransform(4, univariate=zuko.transforms.MonotonicRQSTransform, shapes=((8,), (8,), (7,)))
    with pytest.raises(Unsupported, match="slope=2.0"):
        fused.GeneralCouplingTransform(4, univariate=functools.partial(zuko.transforms.MonotonicAffineTransform, slope=2.0))
    report = accelerate(zuko.flows.NSF(4, transforms=2))
    assert not report.replaced and report.left_alone


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compiles_whole_where_zuko_does(backend):
    model = _model("halves", torch.float32)
    check_compiled_like_the_library(model, lambda flow, x: flow().log_prob(x), torch.randn(8, 6), backend, "zuko")
