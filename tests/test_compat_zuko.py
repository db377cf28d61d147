"""nf_kernels.compat.zuko against zuko itself: flows built with zuko's API, before and after accelerate
(tests/compat_helpers.py says what is compared)."""

import functools
import inspect
import re

import pytest
import torch
from compat_helpers import BACKENDS, Questions, accelerated_copy, assert_close, skip_if_the_backend_lacks_it
from compat_helpers import check_against_the_library, check_compiled_like_the_library
from spline_cases import SPLINE_BACKENDS

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
    with pytest.raises(Unsupported, match="SoftclipTransform.*only MonotonicAffineTransform, AdditiveTransform and "
                                          "MonotonicRQSTransform"):  # fmt: skip
        fused.GeneralCouplingTransform(4, univariate=zuko.transforms.SoftclipTransform, shapes=())
    with pytest.raises(Unsupported, match="slope=2.0"):
        fused.GeneralCouplingTransform(4, univariate=functools.partial(zuko.transforms.MonotonicAffineTransform, slope=2.0))
    report = accelerate(zuko.flows.NSF(4, transforms=2))
    assert not report.replaced and report.left_alone


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compiles_whole_where_zuko_does(backend):
    model = _model("halves", torch.float32)
    check_compiled_like_the_library(model, lambda flow, x: flow().log_prob(x), torch.randn(8, 6), backend, "zuko")


# Coupling flows with zuko's spline (MonotonicRQSTransform, NSF's univariate, with shapes ((K,), (K,), (K - 1,))), on
# the spline backends; inputs of twice the standard deviation, some beyond the bound.
RQS = zuko.transforms.MonotonicRQSTransform


def _spline_shapes(bins):
    return dict(univariate=RQS, shapes=[(bins,), (bins,), (bins - 1,)])


SPLINE_MODELS = {
    "nice-rqs": lambda: zuko.flows.NICE(5, transforms=4, **_spline_shapes(6)),
    "nice-rqs-context": lambda: zuko.flows.NICE(6, context=3, transforms=4, randmask=True, **_spline_shapes(4)),
    "halves-rqs-bound-slope": lambda: halves_flow(7, univariate=functools.partial(RQS, bound=3.0, slope=1e-2),
                                                  shapes=[(5,), (5,), (4,)]),  # fmt: skip
    "halves-rqs-two-bins": lambda: halves_flow(6, **_spline_shapes(2)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", SPLINE_BACKENDS)
@pytest.mark.parametrize("name", list(SPLINE_MODELS))
def test_accelerated_spline_flow_computes_what_zuko_does(name, backend, dtype):
    torch.manual_seed(0)
    model = SPLINE_MODELS[name]().to(dtype)
    x = 2 * torch.randn(8, model.transform.transforms[0].mask.numel(), dtype=dtype)
    questions = _questions(_context(model, dtype))
    _, report = check_against_the_library(model, backend, dtype, x, questions, replaced=4, float32_gradients_to_truth=True)
    assert not report.left_alone


@pytest.mark.parametrize("univariate, shapes, reason", [
    (RQS, [(5,), (5,), (5,)], "MonotonicRQSTransform with parameter shapes .* not \\(\\(K,\\), \\(K,\\), \\(K - 1,\\)\\)"),
    (functools.partial(RQS, slope=1.5), [(3,), (3,), (2,)], "MonotonicRQSTransform slope=1.5: .* 0 < slope < 1"),
    (functools.partial(RQS, bound=float("inf")), [(3,), (3,), (2,)], "bound=inf: the fused spline needs one finite"),
    (functools.partial(RQS, 0.5), [(3,), (3,), (2,)], "only MonotonicAffineTransform, AdditiveTransform and Mono"),
])  # fmt: skip
def test_splines_the_op_cannot_take_are_refused_saying_why(univariate, shapes, reason):
    with pytest.raises(Unsupported, match=reason):
        fused.GeneralCouplingTransform(4, univariate=univariate, shapes=shapes)
    report = accelerate(zuko.flows.GeneralCouplingTransform(4, univariate=univariate, shapes=shapes))
    assert not report.replaced and re.search(reason, report.left_alone[0].reason)
