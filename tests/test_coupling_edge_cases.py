"""Edge cases of SPEC section 1: non-contiguous inputs, empty batches, determinism, NaN, nothing transformed."""

import pytest
import torch

import nf_kernels
from conftest import CPU_BACKENDS, FUSED_CPU_BACKENDS, MASK_CASES, SCALES, Coupling, MaskCase, all_couplings, with_backends


def _non_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values as `t`, in a strided view (every other element of a buffer twice as large)."""
    buffer = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), dtype=t.dtype)
    buffer[..., ::2] = t
    view = buffer[..., ::2]
    assert not view.is_contiguous()
    return view


@pytest.mark.parametrize("case, backend", with_backends(CPU_BACKENDS, all_couplings(MASK_CASES, reverse=(True,))))
def test_non_contiguous_inputs_equal_contiguous_copies(case, backend):
    x, h = case.inputs(torch.float32)
    grad_y = torch.randn(x.shape)
    results = []
    for make in (lambda t: t.clone(), _non_contiguous):
        xi, hi = make(x).requires_grad_(True), make(h).requires_grad_(True)
        y, logdet = case(xi, hi, backend)
        torch.autograd.backward((y, logdet), (_non_contiguous(grad_y), torch.ones_like(logdet)))
        results.append((y, logdet, xi.grad, hi.grad))
    for contiguous, strided in zip(*results):
        torch.testing.assert_close(strided, contiguous, rtol=0, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("additive", [False, True])
def test_strided_bool_mask_gives_contiguous_outputs(backend, additive):
    """SPEC: y is contiguous. The reference laid y out like a transposed mask."""
    x = torch.randn(2, 3, 4)
    mask = torch.rand(4, 3) < 0.5
    strided = mask.t()  # shape (3, 4), not contiguous
    assert not strided.is_contiguous()
    case = Coupling(MaskCase("bool", tuple(x.shape)), None if additive else "tanh")
    h = torch.randn(case.h_shape())
    x.requires_grad_(True)
    y, logdet = case(x, h, backend, mask=strided)
    y_ref, logdet_ref = case(x, h, backend, mask=strided.contiguous())
    assert y.is_contiguous() and logdet.is_contiguous()
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(logdet, logdet_ref, rtol=0, atol=0)
    (grad_x,) = torch.autograd.grad(y.sum(), x)
    assert grad_x.is_contiguous()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_transposed_image_input(backend):
    x = torch.randn(2, 9, 7, 5).transpose(1, 3)  # [2, 5, 7, 9], channels-last-like strides
    h = torch.randn(2, 10, 7, 9)
    for mask in ("checkerboard", "half"):
        hh = h if mask == "checkerboard" else h[:, :6]
        y, logdet = nf_kernels.affine_coupling(x, hh, mask=mask, scale="tanh", backend=backend)
        y_ref, logdet_ref = nf_kernels.affine_coupling(x.contiguous(), hh, mask=mask, scale="tanh", backend=backend)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
        torch.testing.assert_close(logdet, logdet_ref, rtol=0, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("additive", [False, True])
def test_empty_batch(backend, additive):
    for shape in ((0, 5), (0, 4, 3, 3), (3, 0)):
        case = Coupling(MaskCase("half", shape), None if additive else "exp")
        x, h = case.inputs()
        x.requires_grad_(True)
        h.requires_grad_(True)
        y, logdet = case(x, h, backend)
        assert y.shape == x.shape and logdet.shape == (shape[0],)
        assert torch.equal(logdet, torch.zeros(shape[0]))
        (y.sum() + logdet.sum()).backward()
        assert x.grad.shape == x.shape and h.grad.shape == h.shape


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_sample_with_nothing_transformed_has_zero_logdet(backend):
    # A 1x1 checkerboard with flip=True keeps its only element; an all-True bool mask keeps everything.
    x = torch.randn(3, 2, 1, 1)
    h = torch.randn(3, 4, 1, 1)
    y, logdet = nf_kernels.affine_coupling(x, h, mask="checkerboard", flip=True, backend=backend)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(3))
    y, logdet = nf_kernels.affine_coupling(x, h, mask=torch.ones(2, 1, 1, dtype=torch.bool), backend=backend)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(3))


@pytest.mark.parametrize("backend", FUSED_CPU_BACKENDS)
def test_logdet_is_bitwise_deterministic(backend, small_triton_blocks):
    case = Coupling(MaskCase("checkerboard", (3, 4, 9, 11)), "sigmoid")
    x, h = case.inputs(torch.float32, seed=5)
    first = case(x, h, backend)[1]
    for _ in range(3):
        assert torch.equal(case(x, h, backend)[1], first)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_outputs_never_alias_inputs(backend):
    x = torch.randn(2, 4, 3, 3)
    h = torch.randn(2, 8, 3, 3)
    mask = torch.ones(4, 3, 3, dtype=torch.bool)  # nothing transformed: y has x's values, not its memory
    y, _ = nf_kernels.affine_coupling(x, h, mask=mask, backend=backend)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(
    "case, backend", with_backends(CPU_BACKENDS, [Coupling(MaskCase("checkerboard", (2, 2, 3, 3)), s) for s in SCALES])
)
def test_nan_propagates(case, backend):
    x, h = case.inputs(torch.float32)
    # (0, 0, 0) is transformed ((i + j) % 2 == 0), (0, 0, 1) is kept.
    x[0, 0, 0, 0] = float("nan")
    x[0, 0, 0, 1] = float("nan")
    h[1, 0, 0, 0] = float("nan")  # s_raw of a transformed element of sample 1
    y, logdet = case(x, h, backend)
    assert torch.isnan(y[0, 0, 0, 0]) and torch.isnan(y[0, 0, 0, 1])
    assert torch.isnan(y[1, 0, 0, 0]) and torch.isnan(logdet[1])
    assert not torch.isnan(logdet[0])  # x does not enter the log-det
    assert torch.isnan(y).sum() == 3


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_values_of_h_at_kept_positions_are_ignored(backend):
    case = Coupling(MaskCase("checkerboard", (2, 2, 3, 3)), "exp")
    x, h = case.inputs(torch.float32)
    y, logdet = case(x, h, backend)
    kept = torch.zeros(3, 3, dtype=torch.bool)
    kept[0, 1] = kept[1, 0] = True  # (i + j) % 2 == 1
    h_poisoned = h.clone()
    h_poisoned[:, :, kept] = float("inf")  # both s_raw and t at kept positions
    y2, logdet2 = case(x, h_poisoned, backend)
    torch.testing.assert_close(y2, y, rtol=0, atol=0)
    torch.testing.assert_close(logdet2, logdet, rtol=0, atol=0)


@pytest.mark.parametrize("backend", [b for b in CPU_BACKENDS if b != "cpu"])
def test_a_compact_h_reads_its_masks_contents_on_every_call(backend):
    """A compact h's positions and element count come from the mask's values, which may change in place: the
    eager path remembers a call's checks by shapes only, so these are worked out again each time."""
    half = torch.randn(3, 3, dtype=torch.float64)
    x, h = torch.cat([half, half], 1), torch.randn(3, 6, dtype=torch.float64)  # x's halves alike
    mask = torch.tensor([True, True, True, False, False, False])  # the last 3 transformed
    first, _ = nf_kernels.affine_coupling(x, h, mask=mask, backend=backend)
    mask.logical_not_()  # now the first 3
    second, _ = nf_kernels.affine_coupling(x, h, mask=mask, backend=backend)
    assert torch.equal(first[:, :3], x[:, :3]) and torch.equal(second[:, 3:], x[:, 3:])
    assert torch.equal(first[:, 3:], second[:, :3])  # the same h, on the other (equal) elements
    mask[0] = True  # 2 transformed: h no longer fits
    with pytest.raises(ValueError, match="transforms 2 elements"):
        nf_kernels.affine_coupling(x, h, mask=mask, backend=backend)
