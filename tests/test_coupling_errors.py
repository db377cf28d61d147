"""Bad input gets the SPEC's error with a helpful message, before anything is computed (SPEC section 1), and the
backend choice follows SPEC section 2."""

import re

import pytest
import torch
from conftest import CPU_BACKENDS

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


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_is_a_type_error_listing_the_supported_dtypes(dtype, backend):
    """float8 is floating but no backend computes in it: the reference gave a float8 log-det, `cpu` an internal error."""
    listed = r"supported floating dtype \(float32, float16, bfloat16, float64\), got torch.float8"
    x, h = torch.randn(3, 4), torch.randn(3, 4)
    with pytest.raises(TypeError, match=r"x must have a " + listed):
        nf_kernels.affine_coupling(x.to(dtype), h, backend=backend)
    with pytest.raises(TypeError, match=r"h must have a " + listed):
        nf_kernels.affine_coupling(x, h.to(dtype), backend=backend)
    with pytest.raises(TypeError, match=r"t must have a " + listed):
        nf_kernels.additive_coupling(x, torch.randn(3, 2).to(dtype), backend=backend)


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
    with pytest.raises(ValueError, match=r"sample shape \(4,\).*\(5,\)"):
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


@pytest.mark.parametrize("scale", ["tanh", "atan", "exp"])
@pytest.mark.parametrize("clamp", [0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_clamp_must_be_positive_and_finite(clamp, scale):
    # clamp=inf used to give NaN with tanh/atan: inf * tanh(s / inf) = inf * 0.
    with pytest.raises(ValueError, match="clamp must be > 0 and finite"):
        affine(torch.randn(3, 4), torch.randn(3, 4), scale=scale, clamp=clamp)


@pytest.mark.parametrize("clamp", ["2", None, True, torch.tensor([1.0, 2.0])])
def test_clamp_must_be_a_number(clamp):
    with pytest.raises(TypeError, match="clamp must be a real number"):
        affine(torch.randn(3, 4), torch.randn(3, 4), scale="tanh", clamp=clamp)


def test_affine_scale_none_is_an_error_pointing_to_additive_coupling():
    """scale="none" used to run an additive coupling through affine_coupling, with `h` of t's shape."""
    x = torch.randn(3, 4)
    for h in (torch.randn(3, 2), torch.randn(3, 4)):  # t's shape and h's shape
        with pytest.raises(ValueError, match=r"'exp', 'tanh', 'atan', 'sigmoid'.*nf_kernels.additive_coupling"):
            affine(x, h, scale="none")
    y, logdet = nf_kernels.additive_coupling(x, torch.ones(3, 2), backend="reference")  # the additive op still runs
    assert torch.equal(y[:, 2:], x[:, 2:] + 1) and not logdet.any()


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
    with pytest.raises(RuntimeError, match=r"backend 'cuda' cannot run on cpu: .*cuda tensors.*On cpu use .*'reference'"):
        nf_kernels.affine_coupling(torch.randn(3, 4), torch.randn(3, 4), backend="cuda")


def test_triton_on_cpu_without_the_interpreter_says_what_works(fresh_dispatch):
    fresh_dispatch.setenv("TRITON_INTERPRET", "0")
    cpu = "'cpu' or " if _dispatch.why_unavailable("cpu", torch.device("cpu")) is None else ""
    with pytest.raises(RuntimeError, match=rf"TRITON_INTERPRET=1.*On cpu use backend={cpu}'reference' \(or 'auto'\)$"):
        nf_kernels.affine_coupling(torch.randn(3, 4), torch.randn(3, 4), backend="triton")


def _unusable_backend_error(name: str, device: str) -> str:
    with pytest.raises(RuntimeError) as error:
        _dispatch.resolve_backend(name, torch.device(device))
    return str(error.value)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_an_unusable_backend_suggests_exactly_the_backends_that_run_there(device, fresh_dispatch):
    """One message, one list: it used to say "on meta use 'cuda', 'triton' or 'reference'. Available on meta:
    'reference'", a backend's own (wrong) suggestion next to the dispatcher's."""
    fresh_dispatch.setenv("TRITON_INTERPRET", "0")
    names = ("reference", "triton", "cpu", "cuda")
    working = {n for n in names if _dispatch.why_unavailable(n, torch.device(device)) is None}
    for name in sorted(set(names) - working):
        message = _unusable_backend_error(name, device)
        suggested = message.split(f"On {device} use ")[-1]
        assert set(re.findall(r"'(\w+)'", suggested)) == working | {"auto"}, message
        # The reason part names no other backend, so no second, contradicting list.
        assert set(re.findall(r"'(\w+)'", message.split(" use ")[0])) == {name}, message
    if device == "meta":
        assert _unusable_backend_error("cpu", "meta") == (
            "backend 'cpu' cannot run on meta: the 'cpu' backend runs on cpu tensors only. "
            "On meta use backend='reference' (or 'auto')"
        )


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


def test_unknown_h_layout_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown h_layout 'pairs'.*'scale_shift', 'shift_scale', 'shift_scale_pairs'"):
        affine(torch.randn(3, 4), torch.randn(3, 4), h_layout="pairs")


@pytest.mark.parametrize(
    "clamp, error, message",
    [
        ((1.0, -1.0), ValueError, "low < high"),
        ((0.5, 0.5), ValueError, "low < high"),
        ((-float("inf"), 3.0), ValueError, "finite bounds"),
        ((-1.0, float("nan")), ValueError, "finite bounds"),
        (-2.0, ValueError, r"c > 0 for \(-c, c\)"),
        ((-1.0, 0.0, 1.0), ValueError, r"clamp=\(low, high\), got 3 values"),
        (("-1", 1.0), TypeError, "clamp must be a real number"),
    ],
)
def test_clip_takes_two_finite_ordered_bounds(clamp, error, message):
    with pytest.raises(error, match=message):
        affine(torch.randn(3, 4), torch.randn(3, 4), scale="clip", clamp=clamp)


def test_clamp_pair_is_for_clip_only():
    with pytest.raises(TypeError, match=r"clamp=\(low, high\) is for scale='clip' only"):
        affine(torch.randn(3, 4), torch.randn(3, 4), scale="tanh", clamp=(-1.0, 1.0))


def test_compact_h_of_the_wrong_size_names_both_counts():
    x, mask = torch.randn(3, 9), torch.arange(9) % 3 == 0  # 6 transformed elements a sample
    with pytest.raises(ValueError, match="transforms 6 elements.*holds 12 values a sample.*not 10"):
        affine(x, torch.randn(3, 10), mask=mask)
    with pytest.raises(ValueError, match="transforms 6 elements.*holds 6 values a sample.*not 5"):
        nf_kernels.additive_coupling(x, torch.randn(3, 5), mask=mask, backend="reference")
    # Not compact either (the batch differs, or an affine h's dim 1 is odd): the shape error, naming both forms.
    for h in (torch.randn(4, 12), torch.randn(3, 3, 4)):
        with pytest.raises(ValueError, match=r"needs h of shape \(3, 18\) \(or, compact"):
            affine(x, h, mask=mask)


# The peers' layouts and maps (issue 13), which the C++ kernels have since its second stage.
PEER_FEATURES = [
    (dict(scale="clip", clamp=(-5.0, 3.0)), "scale='clip'"),
    (dict(scale="nflows_sigmoid"), "scale='nflows_sigmoid'"),
    (dict(h_layout="shift_scale"), "h_layout='shift_scale'"),
    (dict(h_layout="shift_scale_pairs"), "h_layout='shift_scale_pairs'"),
    (dict(mask=torch.arange(6) % 2 == 0, h=torch.randn(2, 6)), "a bool mask with a compact h"),
]
# What a build of the extension before them exports (csrc/coupling_layout.h's lists then): a prefix of each.
FIRST_STAGE_CODES = {"scale": 5, "pattern": 3, "layout": 11}


def _peer_call(kwargs):
    kwargs = dict(kwargs)
    return torch.randn(2, 6), kwargs.pop("h", torch.randn(2, 6)), kwargs


@pytest.mark.skipif("cpu" not in CPU_BACKENDS, reason="the C++ extension is not built")
@pytest.mark.parametrize("kwargs, named", PEER_FEATURES, ids=lambda v: str(v)[:40])
def test_cpu_computes_the_peer_layouts_and_maps_and_auto_picks_it(kwargs, named, fresh_dispatch):
    fresh_dispatch.delenv("NF_KERNELS_BACKEND", raising=False)
    x, h, kwargs = _peer_call(kwargs)
    y, logdet = nf_kernels.affine_coupling(x, h, backend="cpu", **kwargs)
    y_ref, logdet_ref = nf_kernels.affine_coupling(x, h, backend="reference", **kwargs)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(logdet, logdet_ref)
    config = nf_kernels._arguments.check_coupling_args(x, h, flip=False, reverse=False, backend="auto",
                                                       **{"mask": "half", "scale": "exp", **kwargs})[1]  # fmt: skip
    assert _dispatch.resolve_backend("auto", x.device, config) == "cpu"


@pytest.mark.skipif("cpu" not in CPU_BACKENDS, reason="the C++ extension is not built")
@pytest.mark.parametrize("kwargs, named", PEER_FEATURES, ids=lambda v: str(v)[:40])
def test_a_build_without_a_code_refuses_it_and_auto_picks_a_backend_that_has_it(kwargs, named, fresh_dispatch):
    """What the extension's exported code lists lack (an older build's), "cpu" refuses with a clear error naming it and
    what has it, and "auto" falls back to a backend that computes it."""
    from nf_kernels.backends import extension

    fresh_dispatch.delenv("NF_KERNELS_BACKEND", raising=False)
    current = extension.kernel_codes
    fresh_dispatch.setattr(extension, "kernel_codes", lambda kind: current(kind)[: FIRST_STAGE_CODES[kind]])
    x, h, kwargs = _peer_call(kwargs)
    working = "'reference' or 'triton'" if "triton" in CPU_BACKENDS else "'reference'"
    with pytest.raises(NotImplementedError, match=rf"backend 'cpu' does not support {re.escape(named)} yet; use backend={working} \(or 'auto'\)"):
        nf_kernels.affine_coupling(x, h, backend="cpu", **kwargs)
    y, logdet = nf_kernels.affine_coupling(x, h, **kwargs)  # "auto"
    y_ref, logdet_ref = nf_kernels.affine_coupling(x, h, backend="reference", **kwargs)
    assert torch.equal(y, y_ref) and torch.equal(logdet, logdet_ref)
    config = nf_kernels._arguments.check_coupling_args(x, h, flip=False, reverse=False, backend="auto",
                                                       **{"mask": "half", "scale": "exp", **kwargs})[1]  # fmt: skip
    assert _dispatch.resolve_backend("auto", x.device, config) == "reference"


def test_auto_keeps_the_cpp_kernels_for_what_they_support(fresh_dispatch):
    fresh_dispatch.delenv("NF_KERNELS_BACKEND", raising=False)
    cpp_ready = _dispatch.why_unavailable("cpu", torch.device("cpu")) is None
    x, h = torch.randn(2, 6), torch.randn(2, 6)
    config = nf_kernels._arguments.check_coupling_args(x, h, mask="half", flip=False, reverse=False, backend="auto",
                                                       scale="atan")[1]  # fmt: skip
    assert _dispatch.resolve_backend("auto", x.device, config) == ("cpu" if cpp_ready else "reference")
