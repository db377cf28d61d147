"""GPU only: the "triton" and "cuda" backends against the float64 reference at sizes the CPU interpreter cannot
reach ([64, 3, 256, 256] and more), every dtype, forward and backward; determinism; 64-bit offsets.

Skipped without CUDA, and under the Triton interpreter (tests/conftest.py turns it on unless TRITON_INTERPRET is
set): these tests are about the compiled kernels. benchmarks/gpu_suite.sh runs them with TRITON_INTERPRET=0.
"""

import os

import pytest
import torch

from conftest import LOGDET_TOLERANCE, TOLERANCE, Coupling, MaskCase, rel_err
from nf_kernels._dispatch import why_unavailable

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(INTERPRETING, reason="checks compiled kernels: run with TRITON_INTERPRET=0"),
    # One process at a time on the GPU (under --dist loadgroup): the large cases check free memory, then take it.
    pytest.mark.xdist_group("gpu"),
]

DEVICE = "cuda"
GPU_BACKENDS = ["triton", "cuda"]
GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
BIG = (64, 3, 256, 256)  # odd channel count: the "half" split is uneven (1 kept, 2 transformed)

CASES = [
    Coupling(MaskCase("half", BIG), "exp"),
    Coupling(MaskCase("checkerboard", BIG), "exp"),
    Coupling(MaskCase("half", BIG), "sigmoid", flip=True, shift_first=True, reverse=True),  # Glow's form, inverse
    Coupling(MaskCase("checkerboard", BIG), "tanh", flip=True, reverse=True),
    Coupling(MaskCase("bool", (16, 3, 128, 128)), "atan"),
    Coupling(MaskCase("half", (4096, 1024)), "exp", shift_first=True),  # vectors: a feature split
    Coupling(MaskCase("half", (65536, 64)), "tanh"),  # small vectors: several samples a warp in the CUDA kernels
    Coupling(MaskCase("checkerboard", (8, 3, 1024, 1024)), "atan", reverse=True),  # several passes a chunk (CUDA)
    Coupling(MaskCase("half", BIG), None),  # additive
    Coupling(MaskCase("checkerboard", BIG), None, reverse=True),
]


def _backend(name: str) -> str:
    reason = why_unavailable(name, torch.device(DEVICE))
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    return name


def _inputs(case: Coupling, dtype: torch.dtype, seed: int):
    """x, h, grad_y, grad_logdet on the GPU, drawn in float64 and rounded to `dtype` (the reference sees the same
    rounded values in float64)."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(case.mask.shape, generator=g, device=DEVICE, dtype=torch.float64)
    h = torch.randn(case.h_shape(), generator=g, device=DEVICE, dtype=torch.float64)
    grad_y = torch.randn(case.mask.shape, generator=g, device=DEVICE, dtype=torch.float64)
    grad_logdet = torch.randn(case.mask.shape[0], generator=g, device=DEVICE, dtype=torch.float64)
    return x.to(dtype), h.to(dtype), grad_y.to(dtype), grad_logdet


def _forward_backward(case, backend, x, h, grad_y, grad_logdet, mask):
    x = x.detach().requires_grad_(True)
    h = h.detach().requires_grad_(True)
    y, logdet = case(x, h, backend, mask=mask)
    grad_x, grad_h = torch.autograd.grad((y, logdet), (x, h), (grad_y.to(y.dtype), grad_logdet.to(logdet.dtype)))
    return y.detach(), logdet.detach(), grad_x, grad_h


@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_matches_float64_reference(backend, case, dtype):
    backend = _backend(backend)
    x, h, grad_y, grad_logdet = _inputs(case, dtype, seed=len(str(case)))
    mask = case.mask.mask(DEVICE)
    y, logdet, grad_x, grad_h = _forward_backward(case, backend, x, h, grad_y, grad_logdet, mask)
    ref = _forward_backward(case, "reference", x.double(), h.double(), grad_y.double(), grad_logdet, mask)
    assert y.dtype == dtype and y.is_contiguous() and grad_x.dtype == dtype and grad_h.dtype == dtype
    tol = TOLERANCE[dtype]
    assert rel_err(y, ref[0]) <= tol
    assert rel_err(logdet, ref[1]) <= LOGDET_TOLERANCE[dtype]
    assert rel_err(grad_x, ref[2]) <= tol
    assert rel_err(grad_h, ref[3]) <= tol


@pytest.mark.parametrize("shape", [BIG, (2, 4, 2048, 2048)], ids=str)  # the second: 16M elements in one sample
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_bitwise_deterministic(backend, shape):
    """Same inputs, same device: bitwise the same outputs and log-det (no atomics in the reduction)."""
    backend = _backend(backend)
    case = Coupling(MaskCase("checkerboard", shape), "sigmoid")
    x, h, grad_y, grad_logdet = _inputs(case, torch.bfloat16, seed=3)
    first = _forward_backward(case, backend, x, h, grad_y, grad_logdet, "checkerboard")
    for _ in range(3):
        again = _forward_backward(case, backend, x, h, grad_y, grad_logdet, "checkerboard")
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_non_contiguous_inputs_equal_their_contiguous_copies(backend):
    backend = _backend(backend)
    case = Coupling(MaskCase("half", BIG), "tanh")
    x = torch.randn(64, 256, 256, 3, device=DEVICE).permute(0, 3, 1, 2)  # channels-last memory
    h = torch.randn(64, 4, 256, 512, device=DEVICE)[..., ::2]  # strided
    for a, b in zip(case(x, h, backend), case(x.contiguous(), h.contiguous(), backend)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_batch_beyond_the_grid_limit(backend):
    """70000 samples: more than a CUDA grid's y and z dimensions (65535) can index."""
    backend = _backend(backend)
    case = Coupling(MaskCase("checkerboard", (70000, 2, 4, 4)), "exp")
    x, h, grad_y, grad_logdet = _inputs(case, torch.float32, seed=5)
    ours = _forward_backward(case, backend, x, h, grad_y, grad_logdet, "checkerboard")
    ref = _forward_backward(case, "reference", x.double(), h.double(), grad_y.double(), grad_logdet, "checkerboard")
    for a, b in zip(ours, ref):
        assert rel_err(a, b) <= 1e-5


def _large_inputs(case: Coupling, shape: tuple, needed_gib: int):
    """fp16 x, h, grad_y and a float64 grad_logdet for a problem beyond 2^31 elements; skips without the memory."""
    free, _ = torch.cuda.mem_get_info()
    if free < needed_gib * 2**30:
        pytest.skip(f"needs about {needed_gib} GiB of free GPU memory, {free / 2**30:.0f} GiB free")
    x = torch.randn(shape, device=DEVICE, dtype=torch.float16)
    h = torch.randn(case.h_shape(), device=DEVICE, dtype=torch.float16)
    grad_y = torch.randn(shape, device=DEVICE, dtype=torch.float16)
    grad_logdet = torch.randn(shape[0], device=DEVICE, dtype=torch.float64)
    return x, h, grad_y, grad_logdet


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_offsets_beyond_2_to_the_31(backend):
    """9 * 2^28 fp16 elements (4.5 GiB), 2^28 per sample: the last sample's flat offsets are beyond 2^31, so an
    offset computed in 32-bit integers wraps (with 8 samples, 2^31 elements, every offset would still fit). The far
    end of the last sample is checked against the reference computed on that slice alone (the coupling is
    elementwise)."""
    backend = _backend(backend)
    shape = (9, 4, 2**26)
    assert shape[0] * shape[1] * shape[2] > 2**31
    case = Coupling(MaskCase("half", shape), "exp")
    x, h, grad_y, grad_logdet = _large_inputs(case, shape, 45)
    y, logdet, grad_x, grad_h = _forward_backward(case, backend, x, h, grad_y, grad_logdet, "half")
    tail = (slice(8, 9), slice(None), slice(-4096, None))
    ref = _forward_backward(case, "reference", x[tail].double(), h[tail].double(), grad_y[tail].double(),
                            grad_logdet[8:9], "half")  # fmt: skip
    assert rel_err(y[tail], ref[0]) <= TOLERANCE[torch.float16]
    assert rel_err(grad_x[tail], ref[2]) <= TOLERANCE[torch.float16]
    assert rel_err(grad_h[tail], ref[3]) <= TOLERANCE[torch.float16]
    s_raw = h[:, : h.shape[1] // 2]  # "exp": log-det = sum of s over the transformed elements
    assert rel_err(logdet, s_raw.double().sum(dim=(1, 2))) <= LOGDET_TOLERANCE[torch.float16]


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_checkerboard_beyond_2_to_the_31(backend):
    """A checkerboard on more than 2^31 fp16 elements in all, with odd H and W (rows and planes never line up with
    the kernels' groups): the last sample's far end against the reference on that slice (the coupling is elementwise
    and the parity depends only on the position in the plane)."""
    backend = _backend(backend)
    shape = (9, 3, 8191, 9743)  # 2_154_732_651 elements
    case = Coupling(MaskCase("checkerboard", shape), "tanh")
    x, h, grad_y, grad_logdet = _large_inputs(case, shape, 48)
    y, logdet, grad_x, grad_h = _forward_backward(case, backend, x, h, grad_y, grad_logdet, "checkerboard")
    rows = slice(8128, None)  # the last 63 rows of each channel of the last sample, from an even row: same parity
    ref = _forward_backward(case, "reference", x[8:, :, rows].double(), h[8:, :, rows].double(),
                            grad_y[8:, :, rows].double(), grad_logdet[8:], "checkerboard")  # fmt: skip
    assert rel_err(y[8:, :, rows], ref[0]) <= TOLERANCE[torch.float16]
    assert rel_err(grad_x[8:, :, rows], ref[2]) <= TOLERANCE[torch.float16]
    assert rel_err(grad_h[8:, :, rows], ref[3]) <= TOLERANCE[torch.float16]


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_conditioner_output_in_another_dtype(backend):
    """Under autocast a conditioner returns bf16 `h` for float32 `x`: the result has x's dtype and precision."""
    backend = _backend(backend)
    case = Coupling(MaskCase("checkerboard", BIG), "sigmoid", shift_first=True)
    x, h, grad_y, grad_logdet = _inputs(case, torch.float32, seed=7)
    h = h.to(torch.bfloat16)
    ours = _forward_backward(case, backend, x, h, grad_y, grad_logdet, "checkerboard")
    ref = _forward_backward(case, "reference", x.double(), h.double(), grad_y.double(), grad_logdet, "checkerboard")
    assert ours[0].dtype == torch.float32 and ours[3].dtype == torch.bfloat16
    for a, b, tol in zip(ours, ref, (1e-5, 1e-5, 1e-5, TOLERANCE[torch.bfloat16])):
        assert rel_err(a, b) <= tol


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_torch_compile_fullgraph_matches_eager(backend):
    backend = _backend(backend)
    case = Coupling(MaskCase("half", BIG), "tanh", reverse=True)
    x, h, grad_y, grad_logdet = _inputs(case, torch.bfloat16, seed=9)
    compiled = torch.compile(lambda x, h: case(x, h, backend, mask="half"), fullgraph=True)
    for a, b in zip(compiled(x, h), case(x, h, backend)):
        assert torch.equal(a, b)


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of `t` whose data starts one element into its buffer: not 16-byte aligned."""
    buffer = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = buffer[1:].view(t.shape)
    view.copy_(t)
    return view


# Odd sizes (no sample is a whole number of 16-byte groups or of Triton blocks) and the same kernel variants as
# CASES: the element-by-element path of the CUDA kernels and the masked tails, which the big shapes never reach.
ODD_CASES = [
    Coupling(MaskCase("half", (3, 5, 7, 9)), "exp"),
    Coupling(MaskCase("checkerboard", (2, 5, 7, 9)), "tanh", flip=True, reverse=True),
    Coupling(MaskCase("bool", (3, 37)), "atan"),
    Coupling(MaskCase("half", (5, 4099)), "sigmoid", flip=True, shift_first=True, reverse=True),
    Coupling(MaskCase("checkerboard", (6, 2, 3, 1)), "exp"),  # planes smaller than a 16-byte group, W = 1
    Coupling(MaskCase("checkerboard", (64, 3, 2, 2)), "sigmoid", flip=True),  # aligned, a plane of 4 elements
    Coupling(MaskCase("half", (1000, 6)), None),  # a sample smaller than one group of float16
]


@pytest.mark.parametrize("misaligned", [False, True], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", ODD_CASES, ids=str)
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_odd_sizes_and_misaligned_inputs(backend, case, dtype, misaligned):
    backend = _backend(backend)
    x, h, grad_y, grad_logdet = _inputs(case, dtype, seed=11)
    mask = case.mask.mask(DEVICE)
    if misaligned:
        x, h, grad_y = _misaligned(x), _misaligned(h), _misaligned(grad_y)
    ours = _forward_backward(case, backend, x, h, grad_y, grad_logdet, mask)
    ref = _forward_backward(case, "reference", x.double(), h.double(), grad_y.double(), grad_logdet, mask)
    tolerances = (TOLERANCE[dtype], LOGDET_TOLERANCE[dtype], TOLERANCE[dtype], TOLERANCE[dtype])
    for out, expected, tol in zip(ours, ref, tolerances):
        assert rel_err(out, expected) <= tol


# Tensors narrower than x, which the CUDA vector path moves as a team's 16-byte blocks (csrc/cuda/block_exchange.h):
# the bool mask (a byte an element: blocks of 16 elements) and h in a narrower dtype than x (blocks of 8 or 4
# groups' worth), each with every x width (groups of 2, 4 and 8 elements), on samples from one block to chunks of
# several passes, teams of every width, and sizes that are not whole blocks (the element path).
NARROW_CASES = [
    Coupling(MaskCase("bool", (64, 3, 32, 32)), "tanh"),  # chunks of a warp
    Coupling(MaskCase("bool", (2, 3, 1024, 1024)), "exp"),  # chunks of several passes
    Coupling(MaskCase("bool", (4096, 16)), "exp", reverse=True),  # one mask block a sample: teams of 1 to 4 lanes
    Coupling(MaskCase("bool", (1024, 48)), "sigmoid", shift_first=True),  # blocks shared by two teams' rows
    Coupling(MaskCase("bool", (256, 36)), "atan"),  # not whole mask blocks: the element path
    Coupling(MaskCase("bool", (32, 4, 16, 16)), None, reverse=True),  # additive
    Coupling(MaskCase("half", (64, 6, 32, 32)), "tanh", flip=True),
    Coupling(MaskCase("half", (65536, 64)), "exp", shift_first=True),  # teams of 8 to 16 lanes, several a warp
    Coupling(MaskCase("half", (4096, 12)), "tanh"),  # lo = 6: not whole blocks of 16-bit h, the element path
    Coupling(MaskCase("checkerboard", (16, 3, 64, 64)), None),  # additive: t alone
]
# (x, h) dtypes: one of each group width with h of x's dtype, and h narrower than x by a factor 2 and 4.
NARROW_DTYPES = [
    (torch.float32, torch.float32), (torch.float16, torch.float16), (torch.float64, torch.float64),
    (torch.float32, torch.bfloat16), (torch.float64, torch.float32), (torch.float64, torch.float16),
]  # fmt: skip


@pytest.mark.parametrize("misaligned", [False, True], ids=["aligned", "misaligned"])
@pytest.mark.parametrize("dtypes", NARROW_DTYPES, ids=lambda d: f"x:{d[0]}-h:{d[1]}".replace("torch.", ""))
@pytest.mark.parametrize("case", NARROW_CASES, ids=str)
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_narrow_mask_and_h_match_float64_reference(backend, case, dtypes, misaligned):
    backend = _backend(backend)
    x_dtype, h_dtype = dtypes
    x, h, grad_y, grad_logdet = _inputs(case, x_dtype, seed=17)
    h = h.to(h_dtype)
    mask = case.mask.mask(DEVICE)
    if misaligned:
        x, h, grad_y = _misaligned(x), _misaligned(h), _misaligned(grad_y)
    ours = _forward_backward(case, backend, x, h, grad_y, grad_logdet, mask)
    ref = _forward_backward(case, "reference", x.double(), h.double(), grad_y.double(), grad_logdet, mask)
    assert ours[0].dtype == x_dtype and ours[3].dtype == h_dtype
    tolerances = (TOLERANCE[x_dtype], LOGDET_TOLERANCE[x_dtype], TOLERANCE[x_dtype], TOLERANCE[h_dtype])
    for out, expected, tol in zip(ours, ref, tolerances):
        assert rel_err(out, expected) <= tol


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_additive_inverse_log_det_is_plus_zero(backend):
    """logdet = 0 (SPEC), and +0 whichever direction: 0 - sum, not -sum, of nothing."""
    backend = _backend(backend)
    for shape in [(64, 3, 32, 32), (8, 3, 1024, 1024)]:  # one chunk a sample; partial sums of several chunks
        case = Coupling(MaskCase("half", shape), None, reverse=True)
        x, t, _, _ = _inputs(case, torch.float32, seed=19)
        _, logdet = case(x, t, backend)
        assert torch.equal(logdet, torch.zeros_like(logdet)) and not torch.signbit(logdet).any()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_tensors_on_another_device_than_the_current_one(backend):
    """Inputs on cuda:1 while cuda:0 is current: the kernels run on the inputs' device and stream."""
    backend = _backend(backend)
    case = Coupling(MaskCase("checkerboard", (4, 3, 33, 35)), "tanh")
    x, h, grad_y, grad_logdet = _inputs(case, torch.float32, seed=13)
    x, h, grad_y, grad_logdet = (t.to("cuda:1") for t in (x, h, grad_y, grad_logdet))
    with torch.cuda.device(0):
        ours = _forward_backward(case, backend, x, h, grad_y, grad_logdet, "checkerboard")
        torch.cuda.synchronize(1)
    ref = _forward_backward(case, "reference", x.double(), h.double(), grad_y.double(), grad_logdet, "checkerboard")
    for out, expected in zip(ours, ref):
        assert out.device == x.device and rel_err(out, expected) <= 1e-5


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("scale", ["exp", "tanh"])
def test_logdet_bits_do_not_depend_on_the_inputs_alignment(backend, scale):
    """A view at an odd storage offset gives the same log-det bits as its aligned copy: the kernels' summation
    order is a function of the shapes alone (Triton would compile a narrower variant for a misaligned pointer)."""
    case = Coupling(MaskCase("half", (8, 7)), scale)
    x, h = case.inputs(torch.float32)
    x_storage = torch.empty(x.numel() + 1, device=DEVICE)
    h_storage = torch.empty(h.numel() + 1, device=DEVICE)
    x_odd = x_storage[1:].view(x.shape).copy_(x)  # 4 bytes past a 16-byte boundary
    h_odd = h_storage[1:].view(h.shape).copy_(h)
    _, logdet_odd = case(x_odd, h_odd, backend)
    _, logdet = case(x_odd.clone(), h_odd.clone(), backend)
    assert torch.equal(logdet_odd.view(torch.int32), logdet.view(torch.int32))
