"""Bad input to the spline coupling: a clear error naming the argument, before anything is computed (SPEC
section 1b's error table), and the dispatcher's answer for backends without spline kernels."""

import pytest
import torch

import nf_kernels
from nf_kernels import _dispatch

from spline_cases import SPLINE_BACKENDS


def _call(x=None, params=None, **kwargs):
    x = torch.randn(3, 6) if x is None else x
    params = torch.randn(3, 3 * 23) if params is None else params
    return nf_kernels.spline_coupling(x, params, **kwargs)


def test_wrong_params_shape_names_the_expected_one():
    with pytest.raises(ValueError, match=r"params has shape \(3, 60\) but x of shape \(3, 6\) with mask='half' and "
                                         r"bins=8 needs params of shape \(3, 69\)"):  # fmt: skip
        _call(params=torch.randn(3, 60))
    with pytest.raises(ValueError, match=r"needs params of shape \(2, 42, 4, 4\)"):
        _call(torch.randn(2, 3, 4, 4), torch.randn(2, 28, 4, 4), mask="checkerboard", bins=5)
    with pytest.raises(ValueError, match=r"needs params of shape \(3, 84\)"):  # a bool mask covers every element
        _call(params=torch.randn(3, 42), mask=torch.rand(6) < 0.5, bins=5)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64, torch.float8_e4m3fn])
def test_unsupported_dtypes_are_type_errors(dtype):
    with pytest.raises(TypeError, match="x must have a supported floating dtype"):
        _call(x=torch.zeros(3, 6, dtype=dtype))
    with pytest.raises(TypeError, match="params must have a supported floating dtype"):
        _call(params=torch.zeros(3, 69, dtype=dtype))


def test_non_tensors_ranks_devices_and_masks():
    with pytest.raises(TypeError, match="params must be a torch.Tensor"):
        _call(params=[1.0] * 69)
    with pytest.raises(ValueError, match="x must have a batch dimension"):
        _call(x=torch.randn(6), params=torch.randn(69))
    with pytest.raises(ValueError, match="x is on cpu but params is on meta"):
        _call(params=torch.empty(3, 69, device="meta"))
    with pytest.raises(ValueError, match="mask='checkerboard' needs image samples"):
        _call(mask="checkerboard")
    with pytest.raises(ValueError, match="a bool mask must have the sample shape"):
        _call(mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown mask 'stripes'"):
        _call(mask="stripes")
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        _call(backend="fast")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(bins=0), ValueError, "bins must be >= 1, got 0"),
        (dict(bins=2.0), TypeError, "bins must be an int, got float"),
        (dict(bins=True), TypeError, "bins must be an int, got bool"),
        (dict(bound=0.0), ValueError, "bound must be > 0 and finite"),
        (dict(bound=-1.0), ValueError, "bound must be > 0 and finite"),
        (dict(bound=float("inf")), ValueError, "bound must be > 0 and finite"),
        (dict(bound=float("nan")), ValueError, "bound must be > 0 and finite"),
        (dict(bound="3"), TypeError, "bound must be a real number"),
        (dict(min_bin_width=0.125), ValueError, r"min_bin_width must be >= 0 with min_bin_width \* bins < 1"),
        (dict(min_bin_width=-1e-3), ValueError, "min_bin_width must be >= 0"),
        (dict(min_bin_height=0.2), ValueError, r"min_bin_height \* bins < 1, got min_bin_height=0.2 for bins=8"),
        (dict(min_bin_height=float("nan")), ValueError, "min_bin_height must be >= 0"),
        (dict(min_derivative=0.0), ValueError, "min_derivative must be > 0 and finite"),
        (dict(min_derivative=None), TypeError, "min_derivative must be a real number"),
    ],
)  # fmt: skip
def test_bad_scalars_name_the_argument(kwargs, error, message):
    bins = kwargs.get("bins", 8)
    per_element = 3 * bins - 1 if isinstance(bins, int) and bins >= 1 else 23
    with pytest.raises(error, match=message):
        _call(params=torch.randn(3, 3 * per_element), **kwargs)


def test_errors_come_before_any_computation():
    x = torch.empty(2, 2**30, device="meta")
    with pytest.raises(ValueError):
        nf_kernels.spline_coupling(x, torch.empty(2, 3, device="meta"))


@pytest.fixture
def fresh_dispatch(monkeypatch):
    _dispatch._resolve.cache_clear()
    yield monkeypatch
    _dispatch._resolve.cache_clear()


class _AffineOnly:
    """A backend with the affine methods and no spline ones."""

    name = "cpu"
    eager_coupling = None

    def why_unavailable(self, device):
        return None

    def why_unsupported(self, scale, h_layout, mask_kind):
        return None


def test_a_backend_without_spline_kernels_is_refused_and_auto_passes_it_over(fresh_dispatch):
    fresh_dispatch.delenv("NF_KERNELS_BACKEND", raising=False)
    load = _dispatch._load
    fresh_dispatch.setattr(_dispatch, "_load", lambda name: (_AffineOnly(), None) if name == "cpu" else load(name))
    with pytest.raises(NotImplementedError, match=r"^backend 'cpu' does not support spline couplings yet; use "
                                                  r"backend=.*'reference'.* \(or 'auto'\)$"):  # fmt: skip
        _call(backend="cpu")
    assert "cpu" not in _dispatch.resolve_spline_backend("auto", torch.device("cpu"))
    assert _dispatch.resolve_backend("auto", torch.device("cpu")) == "cpu"  # the affine op still picks it


def test_auto_picks_the_first_backend_of_its_order_with_spline_kernels(fresh_dispatch):
    fresh_dispatch.delenv("NF_KERNELS_BACKEND", raising=False)
    order = _dispatch.AUTO_ORDER["cpu"]
    expected = next(name for name in order if name in SPLINE_BACKENDS)
    assert _dispatch.resolve_spline_backend("auto", torch.device("cpu")) == expected


def test_auto_passes_over_a_backend_compiled_for_fewer_bins(fresh_dispatch):
    fresh_dispatch.delenv("NF_KERNELS_BACKEND", raising=False)
    load = _dispatch._load

    class _FewBins(_AffineOnly):
        spline_forward = spline_backward = staticmethod(lambda *args: None)

        def spline_why_unsupported(self, bins):
            return None if bins <= 4 else f"backend 'cpu' supports at most 4 bins, got bins={bins}"

    fresh_dispatch.setattr(_dispatch, "_load", lambda name: (_FewBins(), None) if name == "cpu" else load(name))
    assert _dispatch.resolve_spline_backend("auto", torch.device("cpu"), bins=4) == "cpu"
    assert _dispatch.resolve_spline_backend("auto", torch.device("cpu"), bins=5) != "cpu"
    with pytest.raises(NotImplementedError, match=r"^backend 'cpu' supports at most 4 bins, got bins=5; use "):
        _dispatch.resolve_spline_backend("cpu", torch.device("cpu"), bins=5)


def test_auto_computes_more_bins_than_the_extension_is_compiled_for(fresh_dispatch):
    fresh_dispatch.delenv("NF_KERNELS_BACKEND", raising=False)
    bins = 33  # one more than csrc/spline_layout.h's kMaxSplineBins
    x = torch.randn(3, 4, dtype=torch.float64)
    params = torch.randn(3, 2 * (3 * bins - 1), dtype=torch.float64)
    y, logdet = nf_kernels.spline_coupling(x, params, bins=bins)
    expected = nf_kernels.spline_coupling(x, params, bins=bins, backend="reference")
    torch.testing.assert_close((y, logdet), expected, rtol=1e-10, atol=1e-10)
