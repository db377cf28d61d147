"""The eager path of the extension backends (nf_kernels_ext::coupling, a C++ autograd node) against the custom op
nf_kernels::coupling, which tracing uses: bitwise the same outputs and gradients, the same behaviour under
autocast, poisoning and bad input, and the cache of checked calls (nf_kernels/_prepared.py) never standing in
for a check or for a bool mask's current contents."""

import pytest
import torch
from conftest import FUSED_CPU_BACKENDS, H_LAYOUTS, SCALES, Coupling, MaskCase, supports

import nf_kernels
from nf_kernels import _ops, _prepared
from nf_kernels._arguments import CouplingConfig, check_coupling_args
from nf_kernels.backends import extension, reference

pytestmark = pytest.mark.skipif("cpu" not in FUSED_CPU_BACKENDS, reason="the C++ extension is not built")

EAGER_NODE = "CppNode<nf_kernels::(anonymous namespace)::Coupling>"
MASKS = [MaskCase("half", (3, 5, 2, 3)), MaskCase("checkerboard", (2, 3, 5, 4)), MaskCase("bool", (3, 4, 3, 5)),
         MaskCase("compact", (3, 11)), MaskCase("compact", (2, 5, 2, 3))]  # fmt: skip
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous view."""
    buffer = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), dtype=t.dtype)
    buffer[..., ::2] = t
    return buffer[..., ::2]


def _custom_op(case: Coupling, x, h, mask):
    """The same call through the custom op, as a traced call would make it (the config as the op layer checks it)."""
    options = {"additive": True} if case.additive else {
        "scale": case.scale, "clamp": case.clamp_arg, "shift_first": case.shift_first, "h_layout": case.h_layout}  # fmt: skip
    mask_tensor, config = check_coupling_args(x, h, mask=mask, flip=case.flip, reverse=case.reverse, backend="cpu",
                                              **options)  # fmt: skip
    if config.mask_kind == "compact":
        mask_tensor = mask
    return _ops.coupling_op(x, h, mask_tensor, *config, "cpu")


def _run(fn, x, h, grads):
    """(y, logdet, grad_x, grad_h) of `fn` on fresh leaves holding `x` and `h`'s values and strides."""
    x, h = x.detach().requires_grad_(True), h.detach().requires_grad_(True)
    y, logdet = fn(x, h)
    grad_x, grad_h = torch.autograd.grad((y, logdet), (x, h), grads)
    return y.grad_fn.name(), (y, logdet, grad_x, grad_h)


def _cases():
    """Every scale map, h layout (taken in turn) and mask the C++ kernels compute (the others they refuse:
    tests/test_coupling_errors.py)."""
    cases = []
    for m, mask in enumerate(MASKS):
        for i, scale in enumerate([*SCALES, None]):
            for reverse in (False, True):
                layout = H_LAYOUTS[(i + reverse + m) % len(H_LAYOUTS)] if scale else "scale_shift"
                cases.append(Coupling(mask, scale, flip=(i + reverse) % 2 == 1, shift_first=i % 2 == 0, reverse=reverse,
                                      h_layout=layout))  # fmt: skip
    return [case for case in cases if supports("cpu", case)]


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", _cases(), ids=str)
def test_eager_path_equals_the_custom_op_bitwise(case, dtype, contiguous):
    x, h = case.inputs(dtype)
    if not contiguous:
        x, h = _strided(x), _strided(h)
    mask = case.mask.mask()
    g = torch.Generator().manual_seed(1)
    grads = (torch.randn(x.shape, generator=g).to(dtype), torch.randn(x.shape[0], generator=g).to(
        torch.float64 if dtype == torch.float64 else torch.float32))  # fmt: skip
    eager_node, eager = _run(lambda x, h: case(x, h, "cpu", mask), x, h, grads)
    custom_node, custom = _run(lambda x, h: _custom_op(case, x, h, mask), x, h, grads)
    assert eager_node.endswith(EAGER_NODE) and "nf_kernels_coupling" in custom_node
    for ours, theirs in zip(eager, custom):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("case", [c for c in _cases() if c.scale in ("tanh", "sigmoid", "nflows_sigmoid", "softclamp",
                                                                  "freia_sigmoid", None)][::2], ids=str)
def test_gradcheck_through_the_eager_path(case):
    x, h = case.inputs(torch.float64)
    x.requires_grad_(True)
    h.requires_grad_(True)
    assert case(x, h, "cpu")[0].grad_fn.name().endswith(EAGER_NODE)
    assert torch.autograd.gradcheck(lambda x, h: case(x, h, "cpu"), (x, h), eps=1e-6, atol=1e-7)


def test_autocast_gives_the_custom_ops_results():
    """fp32 x with the bf16 h autocast makes: h passes through in bf16 on both paths, bitwise the same results."""
    torch.manual_seed(0)
    conditioner = torch.nn.Linear(3, 8)
    x = torch.randn(5, 7)
    results = []
    for path in ("eager", "custom"):
        conditioner.zero_grad()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = conditioner(xi[:, :3])
            assert h.dtype == torch.bfloat16
            if path == "eager":
                y, logdet = nf_kernels.affine_coupling(xi, h, scale="atan", backend="cpu")
                assert y.grad_fn.name().endswith(EAGER_NODE)
            else:
                y, logdet = _ops.coupling_op(xi, h, None, *CouplingConfig("half", False, "atan", 2.0, False, False), "cpu")
        (y.square().sum() + logdet.sum()).backward()
        results.append((y, logdet, xi.grad, conditioner.weight.grad.clone()))
    assert results[0][0].dtype == torch.float32 and results[0][1].dtype == torch.float32
    for ours, theirs in zip(*results):
        assert torch.equal(ours, theirs)


def test_only_one_output_used_gets_zeros_for_the_other():
    x = torch.randn(3, 6, requires_grad=True)
    h = torch.randn(3, 6, requires_grad=True)
    for keep in (0, 1):
        eager = torch.autograd.grad(nf_kernels.affine_coupling(x, h, backend="cpu")[keep].sum(), (x, h))
        custom = torch.autograd.grad(_ops.coupling_op(x, h, None, *CouplingConfig("half", False, "exp", 2.0, False, False),
                                                      "cpu")[keep].sum(), (x, h))  # fmt: skip
        for ours, theirs in zip(eager, custom):
            assert torch.equal(ours, theirs)


def test_poisoning_reaches_the_eager_op(monkeypatch):
    seen = []
    op = extension._differentiable_op

    def recording(*args):
        seen.append(args[-1])
        return op(*args)

    monkeypatch.setattr(extension, "_differentiable_op", recording)
    x, h = torch.randn(2, 4), torch.randn(2, 4)
    with nf_kernels.poison_outputs(False):
        nf_kernels.affine_coupling(x, h, backend="cpu")
    nf_kernels.affine_coupling(x, h, backend="cpu")  # the suite's fixture poisons
    assert seen == [False, True]


def test_traced_and_unusual_calls_leave_the_eager_path():
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, h = torch.randn(2, 4, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    assert _ops.runs_eagerly(x, h) and _ops.runs_eagerly(torch.nn.Parameter(x.detach()), h)
    with FakeTensorMode() as mode:
        fx, fh = mode.from_tensor(x), mode.from_tensor(h)
        assert not _ops.runs_eagerly(fx, fh)
        y, logdet = nf_kernels.affine_coupling(fx, fh, backend="cpu")
        assert y.shape == x.shape and logdet.shape == (2,)
    assert not _ops.runs_eagerly(torch.randn(2, 4), torch.randn(2, 4).as_subclass(_Subclass))
    # Under torch.func transforms a C++ autograd Function raises; such calls take the reference formulas.
    seen = []

    def record(x):
        seen.append(_ops.runs_eagerly(x, h))
        return x.sum()

    torch.func.grad(record)(x.detach())
    torch.jit.trace(lambda x, h: record(x), (x.detach(), h.detach()), check_trace=False)
    assert seen == [False, False]


class _Subclass(torch.Tensor):
    pass


def test_a_bool_mask_changed_in_place_is_read_anew():
    """The checked call is remembered by the mask's shape, never its contents or identity."""
    x, h = torch.randn(3, 2, 5), torch.randn(3, 4, 5)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    config = nf_kernels._arguments.CouplingConfig("tensor", False, "tanh", 2.0, False, False)
    for change in (lambda m: m[0].fill_(True), lambda m: m.data[:, 1::2].logical_not_(),
                   lambda m: m.numpy().__setitem__((1, 0), True), lambda m: m.zero_()):  # fmt: skip
        change(mask)
        y, logdet = nf_kernels.affine_coupling(x, h, mask=mask, scale="tanh", backend="cpu")
        y_ref, logdet_ref = reference.reference_forward(x, h, mask.clone(), config)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(logdet, logdet_ref)


def test_a_compact_hs_mask_changed_in_place_is_read_anew():
    """A compact h's positions come from the mask's contents: a mask permuted in place moves them."""
    x, h = torch.randn(3, 8), torch.randn(3, 6)
    mask = torch.tensor([True, False, True, True, False, True, True, False])  # 3 transformed elements
    config = nf_kernels._arguments.CouplingConfig("compact", False, "softclamp", 2.0, False, False, "shift_scale_pairs")
    for change in (lambda m: None, lambda m: m.copy_(m.flip(0)), lambda m: m.copy_(m.roll(3))):
        change(mask)
        y, logdet = nf_kernels.affine_coupling(x, h, mask=mask, scale="softclamp", h_layout="shift_scale_pairs",
                                               backend="cpu")  # fmt: skip
        y_ref, logdet_ref = reference.reference_forward(x, h, mask.clone(), config)
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(logdet, logdet_ref)


def test_checks_run_for_every_call_even_when_a_combination_is_remembered():
    _prepared.clear()
    x, h = torch.randn(3, 4), torch.randn(3, 4)
    for _ in range(3):
        nf_kernels.affine_coupling(x, h, scale="tanh", clamp=1.0, backend="cpu")
    assert _prepared.cached_calls() == 1
    with pytest.raises(ValueError, match="needs h of shape"):
        nf_kernels.affine_coupling(x, torch.randn(3, 6), scale="tanh", clamp=1.0, backend="cpu")
    with pytest.raises(TypeError, match="clamp must be a real number"):
        nf_kernels.affine_coupling(x, h, scale="tanh", clamp=True, backend="cpu")  # True == 1.0 as a key
    with pytest.raises(ValueError, match="unknown mask"):
        nf_kernels.affine_coupling(x, h, mask=["half"], scale="tanh", clamp=1.0, backend="cpu")  # unhashable
    with pytest.raises(TypeError, match="dtype"):
        nf_kernels.affine_coupling(x.int(), h, scale="tanh", clamp=1.0, backend="cpu")
    assert _prepared.cached_calls() == 1


def test_the_cache_of_checked_calls_is_bounded(monkeypatch):
    monkeypatch.setattr(_prepared, "MAX_ENTRIES", 4)
    _prepared.clear()
    for batch in range(1, 10):
        nf_kernels.affine_coupling(torch.randn(batch, 4), torch.randn(batch, 4), backend="cpu")
        assert _prepared.cached_calls() <= 4
