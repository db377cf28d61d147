"""What is specific to the extension's spline ops (backends "cpu" and "cuda"); the backend matrix
(test_spline_backends.py) runs the op's numbers against the reference on every backend with `spline_forward`.

Here: opcheck of the raw ops (schemas, fakes), the packed layout's field names against the extension's, the CPU
kernels against nflows' own spline in float64 (values, log-dets and every gradient), thread-count-independent
log-det bits, and the ops' refusals of bins beyond the compiled maximum and of bad calls.
"""

import pytest
import torch

from nf_kernels import _build
from nf_kernels._layout import SPLINE_LAYOUT_FIELDS
from nf_kernels._spline_arguments import SplineConfig
from nf_kernels.backends.extension import CPU_BACKEND, _spline_op_arguments, kernel_codes, spline_max_bins

_module, _why_not = _build.load()
pytestmark = pytest.mark.skipif(_module is None, reason=f"C++ extension not available: {_why_not}")


def _config(bins=8, mask="half", flip=False, reverse=False, bound=3.0):
    return SplineConfig(mask, flip, bins, bound, 1e-3, 1e-3, 1e-3, reverse)


def _params_shape(shape, config):
    channels = shape[1] - shape[1] // 2 if config.mask_kind == "half" else shape[1]
    return (shape[0], channels * (3 * config.bins - 1), *shape[2:])


def _case(shape, config, dtype=torch.float64, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = (1.3 * torch.randn(shape, generator=g)).to(dtype)
    params = (scale * torch.randn(_params_shape(shape, config), generator=g)).to(dtype)
    mask = torch.rand(shape[1:], generator=g) < 0.5 if config.mask_kind == "tensor" else None
    return x, params, mask


def test_layout_fields_match_the_extension():
    assert kernel_codes("spline_layout") == SPLINE_LAYOUT_FIELDS
    assert spline_max_bins() == 32


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize(
    "shape,mask,dtype",
    [((2, 5, 3, 4), "half", torch.float32), ((2, 3, 4, 5), "checkerboard", torch.float64),
     ((3, 2, 4, 4), "tensor", torch.bfloat16), ((3, 7), "half", torch.float16)],
    ids=str,
)  # fmt: skip
def test_opcheck_spline_ops(shape, mask, dtype, backward):
    config = _config(bins=4, mask=mask)
    x, params, mask_tensor = _case(shape, config, dtype)
    arguments = _spline_op_arguments(x, mask_tensor, config)
    if backward:
        grad_logdet = torch.randn(shape[0], dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        inputs = (torch.randn_like(x), grad_logdet, x, params, *arguments)
        torch.library.opcheck(torch.ops.nf_kernels_ext.spline_backward.default, inputs)
    else:
        torch.library.opcheck(torch.ops.nf_kernels_ext.spline_forward.default, (x, params, *arguments))


def _nflows(x, params, config):
    """nflows' spline on the transformed half of a [B, C, *] input: (y of that half, per-sample log-det)."""
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    bins, kept = config.bins, x.shape[1] // 2
    xt = x[:, kept:]
    p = params.view(x.shape[0], xt.shape[1], 3 * bins - 1, *x.shape[2:]).movedim(2, -1)
    y, logabsdet = unconstrained_rational_quadratic_spline(
        xt, p[..., :bins], p[..., bins : 2 * bins], p[..., 2 * bins :], inverse=config.reverse, tails="linear",
        tail_bound=config.bound,
    )  # fmt: skip
    return y, logabsdet.flatten(1).sum(1)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("bins", [2, 8, 17])
@pytest.mark.parametrize("shape", [(4, 6, 3, 5), (5, 9)], ids=str)
def test_cpu_matches_nflows_in_float64(shape, bins, reverse):
    config = _config(bins=bins, reverse=reverse)
    x, params, _ = _case(shape, config, seed=bins)
    y, logdet = CPU_BACKEND.spline_forward(x, params, None, config)
    x_ref, params_ref = x.clone().requires_grad_(True), params.clone().requires_grad_(True)
    y_ref, logdet_ref = _nflows(x_ref, params_ref, config)
    kept = shape[1] // 2
    torch.testing.assert_close(y[:, kept:], y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y[:, :kept], x[:, :kept], rtol=0, atol=0)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-9, atol=1e-9)
    grad_y, grad_logdet = torch.randn_like(x), torch.randn(shape[0], dtype=torch.float64)
    ((grad_y[:, kept:] * y_ref).sum() + (grad_logdet * logdet_ref).sum()).backward()
    grad_x, grad_params = CPU_BACKEND.spline_backward(grad_y, grad_logdet, x, params, None, config)
    torch.testing.assert_close(grad_x[:, kept:], x_ref.grad[:, kept:], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(grad_x[:, :kept], grad_y[:, :kept], rtol=0, atol=0)
    torch.testing.assert_close(grad_params, params_ref.grad, rtol=1e-8, atol=1e-8)


def test_logdet_bits_do_not_depend_on_thread_count():
    config = _config(bins=8)
    x, params, _ = _case((3, 4, 120, 100), config, torch.float32)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(CPU_BACKEND.spline_forward(x, params, None, config))
    finally:
        torch.set_num_threads(threads)
    for y, logdet in results[1:]:
        assert torch.equal(y, results[0][0]) and torch.equal(logdet, results[0][1])


# Short samples go to the CPU kernels several to a chunk (csrc/cpu/spline_tiles.h: packs_samples): batches that
# fill several chunks and end in a partial one; vectors, tiny images (R > 1, a checkerboard) and a bool mask (a
# selection within the span).
PACKED = [((37, 9), "half", False), ((37, 9), "half", True), ((70, 2), "half", False), ((23, 2, 2, 3), "half", True),
          ((41, 13), "tensor", False), ((29, 1, 3, 5), "checkerboard", True)]  # fmt: skip


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("shape,mask,flip", PACKED, ids=str)
def test_packed_short_samples_match_the_reference_and_their_own_single_calls(shape, mask, flip, reverse):
    """Against the float64 reference (values, log-det, every gradient); and each sample alone gives the same bits
    as in the batch, its log-det included, on 1 and 2 threads."""
    from nf_kernels.backends.reference import ReferenceBackend

    config = SplineConfig(mask, flip, 6, 2.0, 1e-3, 1e-3, 1e-3, reverse)
    x, params, mask_tensor = _case(shape, config, seed=shape[0])
    y, logdet = CPU_BACKEND.spline_forward(x, params, mask_tensor, config)
    y_ref, logdet_ref = ReferenceBackend().spline_forward(x, params, mask_tensor, config)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logdet, logdet_ref, rtol=1e-9, atol=1e-9)
    grad_y, grad_logdet = torch.randn_like(x), torch.randn(shape[0], dtype=torch.float64)
    grads = CPU_BACKEND.spline_backward(grad_y, grad_logdet, x, params, mask_tensor, config)
    grads_ref = ReferenceBackend().spline_backward(grad_y, grad_logdet, x, params, mask_tensor, config)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)
    x32, params32 = x.float(), params.float()
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            y32, logdet32 = CPU_BACKEND.spline_forward(x32, params32, mask_tensor, config)
            g32 = CPU_BACKEND.spline_backward(grad_y.float(), grad_logdet.float(), x32, params32, mask_tensor, config)
            for b in (0, 17, shape[0] - 1):
                one = slice(b, b + 1)
                y1, logdet1 = CPU_BACKEND.spline_forward(x32[one], params32[one], mask_tensor, config)
                assert torch.equal(y1, y32[one]) and torch.equal(logdet1, logdet32[one])
                g1 = CPU_BACKEND.spline_backward(grad_y[one].float(), grad_logdet[one].float(), x32[one],
                                                 params32[one], mask_tensor, config)  # fmt: skip
                assert torch.equal(g1[0], g32[0][one]) and torch.equal(g1[1], g32[1][one])
    finally:
        torch.set_num_threads(threads)


def test_more_bins_than_compiled_are_refused():
    config = _config(bins=spline_max_bins() + 1)
    x, params, _ = _case((2, 4), config, torch.float32)
    assert CPU_BACKEND.spline_why_unsupported(config.bins) is not None
    assert CPU_BACKEND.spline_why_unsupported(spline_max_bins()) is None
    with pytest.raises(ValueError, match=r"bins=33 is not supported"):
        CPU_BACKEND.spline_forward(x, params, None, config)


@pytest.mark.parametrize(
    "change,message",
    [({"bound": 0.0}, "bound"), ({"min_bin_width": 0.2}, "min_bin_width"),
     ({"min_derivative": -1.0}, "min_derivative")],
)  # fmt: skip
def test_bad_floats_are_refused(change, message):
    x, params, _ = _case((2, 4), _config(bins=8), torch.float32)
    config = _config(bins=8)._replace(**change)
    with pytest.raises(ValueError, match=message):
        CPU_BACKEND.spline_forward(x, params, None, config)


def test_wrong_params_size_is_refused():
    config = _config(bins=8)
    x, params, _ = _case((2, 4), config, torch.float32)
    with pytest.raises(ValueError, match="params has shape"):
        CPU_BACKEND.spline_forward(x, params[:, :-1], None, config)


def test_the_gather_pattern_is_refused():
    """Pattern 3 is the affine op's compact h, with an index array the spline op does not take: refused by name,
    not read through a null mask."""
    config = _config(bins=4)
    x, params, _ = _case((2, 6), config, torch.float32)
    transformed, packed, *floats = _spline_op_arguments(x, None, config)
    packed = list(packed)
    packed[SPLINE_LAYOUT_FIELDS.index("pattern")] = 3
    with pytest.raises(ValueError, match="pattern code 3"):
        torch.ops.nf_kernels_ext.spline_forward(x, params, transformed, packed, *floats)
