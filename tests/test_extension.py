"""What is specific to the C++ extension (backends "cpu" and "cuda"); the op suite (test_coupling_*.py) runs
its whole numeric, gradient and edge-case matrix on "cpu" already, since "cpu" is an available CPU backend.

Here: opcheck of the extension's own ops, a log-det that does not depend on the thread count, every CPU
instruction-set variant against the reference, a larger multi-tile shape, the ops' own argument checks, and
that setup.py and CMake build the same sources.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cancelling_terms

import nf_kernels
from nf_kernels import _build
from nf_kernels._arguments import CouplingConfig
from nf_kernels._masks import expected_h_shape
from nf_kernels._layout import LAYOUT_FIELDS, PATTERN_NAMES, SCALE_NAMES, flat_layout
from nf_kernels.backends import reference
from nf_kernels.backends.extension import CPU_BACKEND, CUDA_BACKEND, _op_arguments

ROOT = Path(__file__).resolve().parent.parent
_module, _why_not = _build.load()
needs_extension = pytest.mark.skipif(_module is None, reason=f"C++ extension not available: {_why_not}")

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def _case(shape, mask, scale="tanh", dtype=torch.float32, h_dtype=None, flip=False, shift_first=False, reverse=False,
          seed=0, h_layout="scale_shift"):
    """(x, h, bool mask or None, config) for a call of the backends' forward and backward. mask="compact" is a bool
    mask with a compact h (h_layout "shift_scale_pairs": the channels of h hold one element each)."""
    g = torch.Generator().manual_seed(seed)
    mask_tensor = torch.rand(shape[1:], generator=g) < 0.5 if mask in ("tensor", "compact") else None
    x = torch.randn(shape, generator=g).to(dtype)
    additive = scale == "none"
    if mask == "compact":
        transformed = int((~mask_tensor).sum())
        h_shape = (shape[0], transformed * (1 if additive else 2))
    else:
        h_shape = expected_h_shape(torch.Size(shape), mask, additive)
    h = torch.randn(h_shape, generator=g).to(h_dtype or dtype)
    clamp, clamp_low = (1.5, -0.5) if scale == "clip" else (1.5, 0.0)
    return x, h, mask_tensor, CouplingConfig(mask, flip, scale, clamp, shift_first, reverse, h_layout, clamp_low)


def _op_inputs(x, h, mask, config, backward=False):
    mask_and_layout = _op_arguments(flat_layout(x, mask, config, h.shape))
    if not backward:
        return (x, h, *mask_and_layout)
    grad_y = torch.randn_like(x)
    grad_logdet = torch.randn(x.shape[0], dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    return (grad_y, grad_logdet, x, h, *mask_and_layout)


OPCHECK_CASES = [
    ((2, 5, 6, 4), "half", "exp", torch.float32, None),
    ((2, 3, 6, 5), "checkerboard", "sigmoid", torch.float64, None),
    ((3, 2, 4, 4), "tensor", "atan", torch.bfloat16, None),
    ((3, 7), "half", "none", torch.float16, None),
    ((2, 4, 4, 4), "half", "tanh", torch.float32, torch.bfloat16),  # autocast: h in a lower precision
    # The peers' layouts and maps (issue 13): [t, s_raw], channel pairs, a compact h (pattern "gather").
    ((2, 4, 3, 3), "half", "nflows_sigmoid", torch.float32, None, "shift_scale"),
    ((3, 4, 2, 2), "checkerboard", "softclamp", torch.float64, None, "shift_scale_pairs"),
    ((3, 9), "compact", "clip", torch.float32, None, "shift_scale_pairs"),
    ((2, 3, 4), "compact", "freia_sigmoid", torch.float16, None, "shift_scale"),
    ((2, 7), "compact", "none", torch.float32, None),
]


@needs_extension
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("case", OPCHECK_CASES, ids=str)
def test_opcheck_extension_ops(case, backward):
    shape, mask, scale, dtype, h_dtype, *h_layout = case
    x, h, mask_tensor, config = _case(shape, mask, scale, dtype, h_dtype, h_layout=(h_layout or ["scale_shift"])[0])
    op = torch.ops.nf_kernels_ext.coupling_backward if backward else torch.ops.nf_kernels_ext.coupling_forward
    torch.library.opcheck(op.default, _op_inputs(x, h, mask_tensor, config, backward))


@needs_extension
def test_direct_call_with_grad_says_autograd_is_not_here():
    """Autograd belongs to nf_kernels._ops; differentiating the raw op fails loudly instead of being wrong."""
    x, h, mask, config = _case((2, 4), "half", "exp")
    x.requires_grad_(True)
    y, logdet = torch.ops.nf_kernels_ext.coupling_forward(*_op_inputs(x, h, mask, config))
    with pytest.raises(RuntimeError, match="not implemented"):
        (y.sum() + logdet.sum()).backward()


@needs_extension
@pytest.mark.parametrize("mask", ["half", "checkerboard"])
def test_logdet_bits_do_not_depend_on_thread_count(mask):
    # 76800 elements a sample: five tiles each, whose sums are added pairwise, and the threads' ranges of tiles
    # start and end inside samples.
    x, h, _, config = _case((3, 4, 96, 200), mask, "tanh")
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3, 4):
            torch.set_num_threads(count)
            results.append(CPU_BACKEND.forward(x, h, None, config))
    finally:
        torch.set_num_threads(threads)
    for y, logdet in results[1:]:
        assert torch.equal(logdet, results[0][1])
        assert torch.equal(y, results[0][0])


@needs_extension
@pytest.mark.parametrize("signs", ["alternating", "halves", "random"])
@pytest.mark.parametrize("count", [5000, 65536 + 4321, 2**20])
def test_cpu_logdet_is_as_accurate_as_torch_sum(count, signs):
    """With scale="exp" the log-det is the plain sum of s_raw, so its float32 error is the summation's alone: the
    CPU kernels' must be within 2x of torch.sum's on the same values (summed over about 2M elements in all)."""
    config = CouplingConfig("half", False, "exp", 1.5, False, False)
    batch = max(2, 2**20 // count)
    cpu_error = torch_error = 0.0
    for seed in range(2):
        s = cancelling_terms(batch, count, signs, seed, low=10.0, high=20.0).float()
        h = torch.stack([s, torch.zeros_like(s)], 1)  # [s_raw | t] of the one transformed channel
        _, logdet = CPU_BACKEND.forward(torch.zeros(batch, 2, count), h, None, config)
        exact = s.double().sum(1)
        cpu_error += (logdet.double() - exact).abs().sum().item()
        torch_error += (s.sum(1).double() - exact).abs().sum().item()
    assert cpu_error <= 2 * torch_error, f"cpu log-det error {cpu_error:.3g}, torch.sum's {torch_error:.3g}"


@needs_extension
@pytest.mark.parametrize("dtype,h_dtype", [(torch.float32, None), (torch.bfloat16, None), (torch.float32, torch.bfloat16)])
@pytest.mark.parametrize("mask", ["half", "checkerboard", "tensor"])
def test_large_multi_tile_shape_matches_reference(mask, dtype, h_dtype):
    x, h, mask_tensor, config = _case((4, 6, 64, 72), mask, "sigmoid", dtype, h_dtype, flip=True, reverse=True)
    grad_y = torch.randn_like(x)
    grad_logdet = torch.randn(x.shape[0])
    with nf_kernels.poison_outputs():
        y, logdet = CPU_BACKEND.forward(x, h, mask_tensor, config)
        grad_x, grad_h = CPU_BACKEND.backward(grad_y, grad_logdet, x, h, mask_tensor, config)
    ref_y, ref_logdet = reference.reference_forward(x.double(), h.double(), mask_tensor, config)
    ref_gx, ref_gh = reference.reference_backward(grad_y.double(), grad_logdet.double(), x.double(), h.double(), mask_tensor, config)
    tolerance = TOLERANCE[dtype] if h_dtype is None else max(TOLERANCE[dtype], TOLERANCE[h_dtype])
    assert _rel_err(y, ref_y) <= tolerance
    assert _rel_err(logdet, ref_logdet) <= 1e-5
    assert _rel_err(grad_x, ref_gx) <= tolerance
    assert _rel_err(grad_h, ref_gh) <= tolerance
    assert (y.dtype, logdet.dtype, grad_x.dtype, grad_h.dtype) == (dtype, torch.float32, dtype, h.dtype)


_VARIANT_CHECK = """
import itertools, torch
from nf_kernels.backends import reference
from nf_kernels.backends.extension import CPU_BACKEND, _op_arguments
from nf_kernels._layout import flat_layout
from nf_kernels._arguments import CouplingConfig
from nf_kernels._masks import expected_h_shape
print(torch.ops.nf_kernels_ext.cpu_isa())
g = torch.Generator().manual_seed(1)
worst = 0.0
for mask, scale, shift_first, reverse in itertools.product(
        ["half", "checkerboard"], ["none", "exp", "tanh", "atan", "sigmoid"], [False, True], [False, True]):
    shape = (2, 3, 9, 11)
    x = torch.randn(shape, generator=g)
    h = torch.randn(expected_h_shape(torch.Size(shape), mask, scale == "none"), generator=g)
    gy, gl = torch.randn(shape, generator=g), torch.randn(2, generator=g)
    config = CouplingConfig(mask, False, scale, 1.5, shift_first, reverse)
    outs = CPU_BACKEND.forward(x, h, None, config) + CPU_BACKEND.backward(gy, gl, x, h, None, config)
    refs = reference.reference_forward(x.double(), h.double(), None, config) + reference.reference_backward(
        gy.double(), gl.double(), x.double(), h.double(), None, config)
    for out, ref in zip(outs, refs):
        worst = max(worst, ((out.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item())
    # The raw ops' h_bias (a sample's parameters are runs here): the same bits as h + h_bias, or a failure.
    raw = _op_arguments(flat_layout(x, None, config))
    bias = torch.randn(h[0].numel(), generator=g)
    biased = torch.ops.nf_kernels_ext.coupling_forward(x, h, *raw, h_bias=bias) + \
        torch.ops.nf_kernels_ext.coupling_backward(gy, gl, x, h, *raw, h_bias=bias)
    added = torch.ops.nf_kernels_ext.coupling_forward(x, h + bias.view(h.shape[1:]), *raw) + \
        torch.ops.nf_kernels_ext.coupling_backward(gy, gl, x, h + bias.view(h.shape[1:]), *raw)
    if not all(torch.equal(a, b) for a, b in zip(biased, added)):
        worst = float("inf")
print(worst)
"""


def _runs(isa: str) -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"baseline": True, "avx2": " avx2 " in flags and " fma " in flags, "avx512": " avx512f " in flags}[isa]


@needs_extension
@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_each_instruction_set_variant_matches_reference(isa):
    """NF_KERNELS_CPU_ISA caps the variant, so each compiled copy of the kernels is checked on this CPU."""
    if not _runs(isa):
        pytest.skip(f"this CPU does not run {isa}")
    env = dict(os.environ, NF_KERNELS_CPU_ISA=isa, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", _VARIANT_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    used, worst = done.stdout.split()
    assert used == isa
    assert float(worst) <= 1e-5


@needs_extension
def test_ops_reject_a_layout_that_does_not_fit_the_tensors():
    x, h, mask, config = _case((2, 6), "half", "exp")

    def forward_with(field, value, case=(x, h, mask, config)):
        x_, h_, transformed, packed, *scalars = _op_inputs(*case)
        packed[LAYOUT_FIELDS.index(field)] = value
        return torch.ops.nf_kernels_ext.coupling_forward(x_, h_, transformed, packed, *scalars)

    with pytest.raises(RuntimeError, match="h_stride=99"):
        forward_with("h_stride", 99)
    with pytest.raises(RuntimeError, match="lo <= hi <= numel"):
        forward_with("hi", 7)  # beyond the sample
    with pytest.raises(RuntimeError, match=f"scale code {len(SCALE_NAMES)}"):
        forward_with("scale_code", len(SCALE_NAMES))
    # The h layouts: s_raw and t must cover h once, as [s_raw, t], [t, s_raw] or (t, s_raw) channel pairs.
    with pytest.raises(RuntimeError, match="describe none of"):
        forward_with("s_offset", 1)  # s_raw and t overlap
    with pytest.raises(RuntimeError, match="describe none of"):
        forward_with("pair_inner", 2)  # pairs of channels of 2 for 3 positions, and with [s_raw, t]'s offsets
    pairs = _case((2, 6), "half", "exp", h_layout="shift_scale_pairs")
    with pytest.raises(RuntimeError, match="describe none of"):
        forward_with("pair_inner", 2, pairs)  # does not divide the 3 positions
    x_, h_, transformed, packed, *scalars = _op_inputs(x, h, mask, config)
    with pytest.raises(RuntimeError, match="packed layout needs"):
        torch.ops.nf_kernels_ext.coupling_forward(x_, h_, transformed, packed[:-1], *scalars)
    additive = _case((2, 6), "half", "none")
    with pytest.raises(RuntimeError, match="additive coupling's h is t alone"):
        forward_with("s_offset", 3, additive)
    clip = _case((2, 6), "half", "clip")
    x_, h_, transformed, packed, clamp, _, h_index = _op_inputs(*clip)
    with pytest.raises(RuntimeError, match="clamp_low < clamp"):
        torch.ops.nf_kernels_ext.coupling_forward(x_, h_, transformed, packed, clamp, clamp + 1.0, h_index)


# The raw ops' h_bias, on layouts whose parameters are runs of h: odd vectors, a multi-tile sample (16384 elements a
# tile, 256 a chunk), images with the half and checkerboard masks, a mask tensor; both h layouts and every direction.
H_BIAS_CASES = [
    ((3, 37), "half", "tanh", "scale_shift", False, False),
    ((2, 2 * 16384 + 1030), "half", "tanh", "scale_shift", True, False),
    ((3, 37), "half", "none", "scale_shift", False, True),
    ((2, 5, 3, 7), "half", "exp", "shift_scale", True, True),
    ((2, 3, 5, 7), "checkerboard", "sigmoid", "scale_shift", False, True),
    ((3, 2, 5, 3), "tensor", "clip", "shift_scale", True, False),
]


def _bias_inputs(case, dtype, backward):
    shape, mask, scale, h_layout, flip, reverse = case
    x, h, mask_tensor, config = _case(shape, mask, scale, dtype, flip=flip, reverse=reverse, h_layout=h_layout)
    bias = torch.randn(h[0].numel(), generator=torch.Generator().manual_seed(5)).to(dtype) * 2
    return _op_inputs(x, h, mask_tensor, config, backward), bias


@needs_extension
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", H_BIAS_CASES, ids=str)
def test_h_bias_is_h_plus_bias_bit_for_bit(case, dtype, backward):
    """The kernels add h_bias to h as they read it, one rounding in the compute type: for float32 and float64 that
    is h + h_bias computed beforehand, to the bit, in every output (grad_h is the gradient of h + h_bias)."""
    inputs, bias = _bias_inputs(case, dtype, backward)
    op = torch.ops.nf_kernels_ext.coupling_backward if backward else torch.ops.nf_kernels_ext.coupling_forward
    h_at = 3 if backward else 1
    added = list(inputs)
    added[h_at] = inputs[h_at] + bias.view(inputs[h_at].shape[1:])
    expected = op(*added, poison=True)  # poison: an output element the kernels leave unwritten is NaN
    got = op(*inputs, poison=True, h_bias=bias)
    for out, ref in zip(got, expected):
        assert torch.equal(out, ref)
    if not (backward and case[2] == "none"):  # an additive coupling's gradients do not depend on h
        assert not all(map(torch.equal, op(*inputs), got))  # the bias does change the result


@needs_extension
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_h_bias_in_half_precision_is_added_in_float32(dtype):
    """In float16 and bfloat16 (h + h_bias formed in float32, the compute type): against the reference on the
    float64 sum, within the dtype's tolerance."""
    x, h, mask, config = _case((3, 2, 5, 6), "half", "tanh", dtype, flip=True)
    bias = torch.randn(h[0].numel(), generator=torch.Generator().manual_seed(5)).to(dtype)
    grad_y, grad_logdet = torch.randn_like(x), torch.randn(x.shape[0])
    raw = _op_arguments(flat_layout(x, mask, config))
    outs = (torch.ops.nf_kernels_ext.coupling_forward(x, h, *raw, h_bias=bias)
            + torch.ops.nf_kernels_ext.coupling_backward(grad_y, grad_logdet, x, h, *raw, h_bias=bias))  # fmt: skip
    h_sum = h.double() + bias.double().view(h.shape[1:])
    refs = (reference.reference_forward(x.double(), h_sum, mask, config)
            + reference.reference_backward(grad_y.double(), grad_logdet.double(), x.double(), h_sum, mask, config))
    for out, ref in zip(outs, refs):
        assert _rel_err(out, ref) <= TOLERANCE[dtype]


@needs_extension
def test_opcheck_extension_ops_with_h_bias():
    for backward in (False, True):
        inputs, bias = _bias_inputs(H_BIAS_CASES[3], torch.float32, backward)
        op = torch.ops.nf_kernels_ext.coupling_backward if backward else torch.ops.nf_kernels_ext.coupling_forward
        torch.library.opcheck(op.default, inputs, {"h_bias": bias})


@needs_extension
def test_ops_reject_an_h_bias_that_does_not_fit():
    x, h, mask, config = _case((2, 6), "half", "exp")
    inputs = _op_inputs(x, h, mask, config)
    forward = torch.ops.nf_kernels_ext.coupling_forward
    bias = torch.zeros(6)
    for wrong in (bias[:-1], bias.view(2, 3), bias.double(), torch.zeros(7)):
        with pytest.raises(ValueError, match="`h_bias` must be 1-D with one value per parameter of a sample \\(6\\)"):
            forward(*inputs, h_bias=wrong)
    pairs = _case((2, 6), "half", "exp", h_layout="shift_scale_pairs")
    with pytest.raises(ValueError, match="parameters are runs of h"):
        forward(*_op_inputs(*pairs), h_bias=bias)
    compact = _case((2, 7), "compact", "exp")
    with pytest.raises(ValueError, match="parameters are runs of h"):
        forward(*_op_inputs(*compact), h_bias=torch.zeros(compact[1][0].numel()))
    assert torch.equal(forward(*inputs, h_bias=bias)[0], forward(*inputs)[0])  # a zero bias changes nothing


@needs_extension
def test_ops_reject_a_compact_table_that_does_not_fit():
    """A compact h's table of positions (pattern "gather"): present, int32, one entry a sample element, and each
    entry -1 or a position of h (on the CPU, where checking costs one pass over the table)."""
    x, h, mask, config = _case((2, 9), "compact", "exp", h_layout="shift_scale")
    x_, h_, transformed, packed, clamp, clamp_low, h_index = _op_inputs(x, h, mask, config)
    op = torch.ops.nf_kernels_ext.coupling_forward
    op(x_, h_, transformed, packed, clamp, clamp_low, h_index)  # as given, it runs
    with pytest.raises(RuntimeError, match="needs `h_index`"):
        op(x_, h_, transformed, packed, clamp, clamp_low, None)
    with pytest.raises(RuntimeError, match="must be Int with one entry per element"):
        op(x_, h_, transformed, packed, clamp, clamp_low, h_index.long())
    with pytest.raises(RuntimeError, match="must be Int with one entry per element"):
        op(x_, h_, transformed, packed, clamp, clamp_low, h_index[:-1])
    beyond = h_index.clone()
    beyond[beyond.argmax()] = h.shape[1] // 2  # one past the last position
    with pytest.raises(RuntimeError, match="entries must be -1 or positions below"):
        op(x_, h_, transformed, packed, clamp, clamp_low, beyond)
    below = h_index.clone()
    below[0] = -2
    with pytest.raises(RuntimeError, match="entries must be -1 or positions below"):
        op(x_, h_, transformed, packed, clamp, clamp_low, below)
    packed_range = list(packed)
    packed_range[LAYOUT_FIELDS.index("lo")] = 1
    with pytest.raises(RuntimeError, match="covers the whole sample"):
        op(x_, h_, transformed, packed_range, clamp, clamp_low, h_index)


@needs_extension
def test_python_and_cpp_share_the_kernel_codes():
    """The scale, pattern and layout-field lists csrc/coupling_layout.h compiles in are prefixes of those of
    nf_kernels/_layout.py: a code that means one thing in Python and another in C++ would compute the wrong
    coupling. (Python's lists may be longer: what the C++ lists lack, the extension refuses.)"""
    for kind, python in (("scale", SCALE_NAMES), ("pattern", PATTERN_NAMES), ("layout", LAYOUT_FIELDS)):
        cpp = torch.ops.nf_kernels_ext.kernel_codes(kind)
        assert list(python[: len(cpp)]) == cpp, kind
    with pytest.raises(ValueError, match="kind must be"):
        torch.ops.nf_kernels_ext.kernel_codes("colour")


@needs_extension
def test_the_packed_layout_has_the_fields_the_build_knows():
    """The extension gets exactly the ints of its own field list, in its order (its ops check the count)."""
    x, h, mask, config = _case((2, 5, 4, 4), "half", "exp")
    packed = _op_arguments(flat_layout(x, mask, config))[1]
    fields = torch.ops.nf_kernels_ext.kernel_codes("layout")
    layout = flat_layout(x, mask, config)
    assert packed == [int(getattr(layout, field)) for field in fields]
    y, _ = CPU_BACKEND.forward(x, h, mask, config)  # which the op takes
    assert y.shape == x.shape


@needs_extension
def test_backends_describe_themselves():
    assert torch.ops.nf_kernels_ext.cpu_isa() in ("avx512", "avx2", "baseline")
    assert repr(CPU_BACKEND).startswith("ExtensionBackend('cpu', kernels=")
    assert CPU_BACKEND.why_unavailable(torch.device("cpu")) is None
    assert "runs on cpu tensors" in CPU_BACKEND.why_unavailable(torch.device("cuda"))
    if not torch.cuda.is_available():
        assert CUDA_BACKEND.why_unavailable(torch.device("cuda")) is not None


def _cmake_cpu_sources() -> list[str]:
    """The files of CMakeLists.txt's `set(NF_CPU_SOURCES ...)`, in order."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = re.search(r"set\(NF_CPU_SOURCES\s+(.*?)\)", cmake, flags=re.S)
    assert block, "CMakeLists.txt has no set(NF_CPU_SOURCES ...)"
    return block.group(1).split()


def test_setup_and_cmake_build_the_same_sources():
    """setup.py compiles _build.CPU_SOURCES, CMakeLists.txt its NF_CPU_SOURCES (the Python module aside): the
    same files, each of them on disk, and every .cpp of csrc/cpu and csrc/ops among them."""
    setup_sources = [path for path in _build.CPU_SOURCES if path != "csrc/python_module.cpp"]
    assert _cmake_cpu_sources() == setup_sources
    on_disk = {str(p.relative_to(ROOT)) for d in ("csrc/cpu", "csrc/ops") for p in (ROOT / d).glob("*.cpp")}
    assert set(setup_sources) == on_disk
    for path in _build.CPU_SOURCES + _build.CUDA_SOURCES:
        assert (ROOT / path).is_file(), path


def test_missing_extension_is_explained_not_raised(monkeypatch):
    """Without nf_kernels._C the package imports and the backends say why (and how to build it)."""
    _build.load.cache_clear()
    monkeypatch.setattr(_build, "MODULE", "nf_kernels._no_such_module")
    try:
        module, reason = _build.load()
        assert module is None and "pip install -e . --no-build-isolation" in reason
    finally:
        _build.load.cache_clear()
