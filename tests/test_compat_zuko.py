"""nf_kernels.compat.zuko against zuko itself: flows built with zuko's API, before and after accelerate
(tests/compat_helpers.py says what is compared)."""

import functools
import inspect

import pytest
import torch
from compat_helpers import (
    BACKENDS,
    accelerated_copy,
    assert_close,
    assert_same_gradients,
    assert_state_dicts_match,
    compiles_fullgraph,
    leaf,
    seeded,
    skip_if_the_backend_lacks_it,
)

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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_accelerated_flow_computes_what_zuko_does(name, backend, dtype):
    model = _model(name, dtype)
    twin, report = accelerated_copy(model, backend)
    assert len(report.replaced) == 4 and not report.left_alone
    assert_state_dicts_match(model, twin)
    c = _context(model, dtype)
    features = model.transform.transforms[0].mask.numel()
    x = torch.randn(8, features, dtype=dtype)
    with skip_if_the_backend_lacks_it(backend):
        assert_close(twin(c).log_prob(x), model(c).log_prob(x), dtype, "log_prob")
        assert_close(seeded(1, twin(c).rsample), seeded(1, model(c).rsample), dtype, "samples")
        ours, theirs = seeded(2, twin(c).rsample_and_log_prob), seeded(2, model(c).rsample_and_log_prob)
        assert_close(ours[0], theirs[0], dtype, "rsample_and_log_prob samples")
        assert_close(ours[1], theirs[1], dtype, "rsample_and_log_prob log_prob")
        layer, twin_layer = model.transform.transforms[0](c), twin.transform.transforms[0](c)
        assert_close(twin_layer.inv(x), layer.inv(x), dtype, "inverse")
        assert_close(twin_layer.inv.log_abs_det_jacobian(x, None), layer.inv.log_abs_det_jacobian(x, layer.inv(x)),
                     dtype, "inverse log-det")  # fmt: skip
        xa, xb = leaf(x), leaf(x)
        model(c).log_prob(xa).sum().backward()
        twin(c).log_prob(xb).sum().backward()
    assert_same_gradients(model, twin, xa, xb, dtype)


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
    if backend not in BACKENDS:
        pytest.skip(f"{backend} does not run here")
    model = _model("halves", torch.float32)
    x = torch.randn(8, 6)

    def log_prob(flow, x):
        return flow().log_prob(x)

    if not compiles_fullgraph(log_prob, model, x):
        pytest.skip("zuko's own flow does not compile with fullgraph=True")
    twin, _ = accelerated_copy(model, backend)
    torch._dynamo.reset()
    compiled = torch.compile(log_prob, fullgraph=True, backend="aot_eager")
    assert_close(compiled(twin, x), model().log_prob(x), torch.float32, "compiled log_prob")
