"""Bad input gets the SPEC's error with a helpful message, before anything is computed (SPEC section 1), and the
backend choice follows SPEC section 2."""

import pytest
import torch

import nf_kernels
from nf_kernels import _dispatch


def affine(x, h, **kw):
    return nf_kernels.affine_coupling(x, h, backend="reference", **kw)


def test_wrong_h_shape_names_all_three_shapes():
    x = torch.randn(3, 7)
    with pytest.raises(ValueError, match=r"\(3, 6\).*\(3, 7\).*\(3, 8\)"):
        affine(x, torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"\(2, 4, 5, 5\).*\(2, 4, 5, 5\).*\(2, 8, 5, 5\)"):
        affine(torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5), mask="checkerboard")
    with pytest.raises(ValueError, match=r"t has shape \(3, 8\).*needs t of shape \(3, 4\)"):
        nf_kernels.additive_coupling(x, torch.randn(3, 8))
    with pytest.raises(ValueError, match="needs h of shape"):
        affine(x, torch.randn(4, 8))  # batch mismatch


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_dtype_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="floating dtype"):
        affine(torch.zeros(3, 4, dtype=dtype), torch.randn(3, 4))
    with pytest.raises(TypeError, match="floating dtype"):
        affine(torch.randn(3, 4), torch.zeros(3, 4, dtype=dtype))


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError, match="torch.Tensor"):
        affine([[1.0, 2.0]], torch.randn(1, 2))


def test_tensors_on_different_devices():
    with pytest.raises(ValueError, match="device"):
        affine(torch.randn(3, 4), torch.randn(3, 4, device="meta"))
    with pytest.raises(ValueError, match="device"):
        affine(torch.randn(3, 4), torch.randn(3, 4), mask=torch.ones(4, dtype=torch.bool, device="meta"))


def test_bad_ranks_and_mask_shapes():
    with pytest.raises(ValueError, match="batch dimension"):
        affine(torch.randn(5), torch.randn(6))
    with pytest.raises(ValueError, match=r"checkerboard.*\[B, C, H, W\]"):
        affine(torch.randn(3, 4), torch.randn(3, 8), mask="checkerboard")
    with pytest.raises(ValueError, match=r"x.shape\[1:\] = \(4,\).*\(5,\)"):
        affine(torch.randn(3, 4), torch.randn(3, 8), mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        affine(torch.randn(3, 4), torch.randn(3, 8), mask=torch.ones(4))


@pytest.mark.parametrize(
    "kwargs, listed",
    [
        (dict(mask="stripes"), "'half', 'checkerboard'"),
        (dict(scale="softplus"), "'exp', 'tanh', 'atan', 'sigmoid'"),
        (dict(backend="numba"), "'auto', 'reference', 'triton', 'cuda', 'cpu'"),
    ],
)
def test_unknown_choices_list_the_valid_ones(kwargs, listed):
    kwargs.setdefault("backend", "reference")
    with pytest.raises(ValueError, match=listed):
        nf_kernels.affine_coupling(torch.randn(3, 4), torch.randn(3, 4), **kwargs)


@pytest.mark.parametrize("clamp", [0.0, -1.0, float("nan")])
def test_clamp_must_be_positive(clamp):
    with pytest.raises(ValueError, match="clamp must be > 0"):
        affine(torch.randn(3, 4), torch.randn(3, 4), scale="tanh", clamp=clamp)


def test_errors_come_before_any_computation():
    """A wrong h shape on a huge input fails at once, with nothing allocated for it."""
    x = torch.empty(2, 2**30, device="meta")
    with pytest.raises(ValueError):
        nf_kernels.affine_coupling(x, torch.empty(2, 3, device="meta"))


@pytest.fixture
def fresh_dispatch(monkeypatch):
    _dispatch._resolve.cache_clear()
    yield monkeypatch
    _dispatch._resolve.cache_clear()


def test_cuda_backend_on_cpu_tensors_says_why(fresh_dispatch):
    with pytest.raises(RuntimeError, match=r"backend 'cuda' cannot run on cpu: .*Available on cpu: 'reference'"):
        nf_kernels.affine_coupling(torch.randn(3, 4), torch.randn(3, 4), backend="cuda")


def test_triton_on_cpu_without_the_interpreter_says_what_works(fresh_dispatch):
    fresh_dispatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match=r"TRITON_INTERPRET=1.*backend='cpu' or 'reference'"):
        nf_kernels.affine_coupling(torch.randn(3, 4), torch.randn(3, 4), backend="triton")


def test_environment_variable_overrides_auto(fresh_dispatch):
    fresh_dispatch.setenv("NF_KERNELS_BACKEND", "triton")
    assert _dispatch.resolve_backend("auto", torch.device("cpu")) == "triton"
    assert _dispatch.resolve_backend("reference", torch.device("cpu")) == "reference"  # explicit wins
    fresh_dispatch.setenv("NF_KERNELS_BACKEND", "fastest")
    with pytest.raises(ValueError, match="NF_KERNELS_BACKEND='fastest'"):
        _dispatch.resolve_backend("auto", torch.device("cpu"))


def test_auto_on_cpu_prefers_the_cpp_extension_else_reference(fresh_dispatch):
    fresh_dispatch.delenv("NF_KERNELS_BACKEND", raising=False)
    cpp_ready = _dispatch.why_unavailable("cpu", torch.device("cpu")) is None
    assert _dispatch.resolve_backend("auto", torch.device("cpu")) == ("cpu" if cpp_ready else "reference")


def test_backends_report_says_why_each_cannot_run():
    report = nf_kernels.list_backends()
    names = {(s.name, s.device) for s in report}
    assert {("reference", "cpu"), ("triton", "cpu"), ("cpu", "cpu"), ("cuda", "cpu")} <= names
    for status in report:
        assert status.available == (status.reason is None)
    cuda_on_cpu = next(s for s in report if s.name == "cuda" and s.device == "cpu")
    assert not cuda_on_cpu.available and cuda_on_cpu.reason
    assert "reference  cpu   available" in str(report)
