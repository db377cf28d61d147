"""Shared test setup: the Triton interpreter, the backends to test, tolerances and input builders."""

import os

# Before anything imports triton: its kernels are built for the interpreter at import time.
os.environ.setdefault("TRITON_INTERPRET", "1")

import functools  # noqa: E402
import math  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Optional, Union  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import nf_kernels  # noqa: E402
import nf_kernels._arguments  # noqa: E402
from nf_kernels import _dispatch  # noqa: E402
from nf_kernels.backends import reference  # noqa: E402

# Every backend that can run on this machine's CPU; "reference" is the oracle the others are checked against.
CPU_BACKENDS = [s.name for s in nf_kernels.list_backends() if s.device == "cpu" and s.available]
FUSED_CPU_BACKENDS = [name for name in CPU_BACKENDS if name != "reference"]

# SPEC section 3: relative error against the float64 reference. The log-det's bound is relative to the condition
# of its sum instead (see assert_logdet_within_bound), keyed by x's dtype: float32 accumulation but for float64.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}
LOGDET_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
SCALES = list(nf_kernels._arguments.SCALES)  # every scale map the library has: a new one is tested without a new test
H_LAYOUTS = list(nf_kernels._arguments.H_LAYOUTS)  # every layout of h, likewise
# The bounds a case of the two-sided "clip" map uses (asymmetric, and reached by standard-normal s_raw).
CLIP_BOUNDS = (-1.1, 0.8)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||, NaN-aware: any NaN where the reference has none is an infinite error."""
    out, ref = out.double(), ref.double()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    if torch.isnan(out).ne(torch.isnan(ref)).any():
        return math.inf
    finite = ~torch.isnan(ref)
    diff = (out - ref)[finite].norm().item()
    scale = ref[finite].norm().item()
    return diff / scale if scale > 0 else diff


def assert_logdet_within_bound(
    logdet: torch.Tensor, logdet_ref: torch.Tensor, condition: torch.Tensor, x_dtype: torch.dtype
) -> None:
    """SPEC section 3, per sample b: |logdet[b] - ref[b]| <= tol * sum_k |a(s_raw[k])| (`condition`)."""
    error = (logdet.double() - logdet_ref.double()).abs()
    bound = LOGDET_TOLERANCE[x_dtype] * condition
    assert not torch.isnan(error).any(), (logdet, logdet_ref)
    assert (error <= bound).all(), f"log-det error {error.tolist()} above the bound {bound.tolist()} ({x_dtype})"


def cancelling_terms(
    batch: int, count: int, signs: str, seed: int = 0, low: float = 2.0, high: float = 4.0
) -> torch.Tensor:
    """[batch, count] float64 terms of magnitude in [low, high) whose row sums cancel to near zero.

    "halves": the first half of each row positive, the second half the same magnitudes negated in another order
    (a zero sum; a running sum climbs to half of sum |v| before it comes back down, the worst case for a sum that
    is not pairwise). "alternating": signs alternate along the row. "random": independent random signs."""
    g = torch.Generator().manual_seed(seed)
    magnitude = low + (high - low) * torch.rand(batch, count, generator=g, dtype=torch.float64)
    if signs == "halves":
        half = count // 2
        shuffled = magnitude[:, torch.randperm(half, generator=g)]
        return torch.cat([magnitude[:, :half], -shuffled, torch.zeros(batch, count - 2 * half, dtype=torch.float64)], 1)
    if signs == "alternating":
        return magnitude * torch.ones(count, dtype=torch.float64).index_fill_(0, torch.arange(1, count, 2), -1.0)
    if signs == "random":
        return magnitude * (torch.randint(0, 2, (batch, count), generator=g) * 2.0 - 1.0)
    raise ValueError(f"unknown sign pattern {signs!r}")


def gradcheck(fn, inputs, backend: str, *, atol: float) -> bool:
    """torch.autograd.gradcheck in float64 (eps 1e-6), in its fast mode for the Triton backend under the
    interpreter: the full mode costs one kernel evaluation per input element (over a minute per case there), the
    fast one compares a random projection v^T J u of the analytical and numerical Jacobians (a few evaluations).
    rtol goes from 1e-3 to 1e-6 there, since the projection averages an element's error with the rest: at 1e-3 it
    let a 1% error of one element's gradient pass, at 1e-6 it fails a 0.1% error (both checked by scaling one
    element of the incoming gradient). The other backends take the full mode."""
    if backend == "triton":
        return torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=atol, rtol=1e-6, fast_mode=True)
    return torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=atol)


def split_h(h: torch.Tensor, h_layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_raw, t) of h by SPEC section 1's h_layout table, written again here (the tests' own copy)."""
    half = h.shape[1] // 2
    if h_layout == "scale_shift":
        return h[:, :half], h[:, half:]
    if h_layout == "shift_scale":
        return h[:, half:], h[:, :half]
    assert h_layout == "shift_scale_pairs", h_layout
    return h[:, 1::2], h[:, 0::2]


def join_h(s: torch.Tensor, t: torch.Tensor, h_layout: str) -> torch.Tensor:
    if h_layout == "scale_shift":
        return torch.cat([s, t], 1)
    if h_layout == "shift_scale":
        return torch.cat([t, s], 1)
    return torch.stack([t, s], 2).flatten(1, 2)


@dataclass(frozen=True)
class MaskCase:
    """A mask with the sample shape it is tested on. "compact" is a bool mask whose h holds only the transformed
    elements: for vectors a random element mask and h of [B, 2T]; for images a channel mask (nflows' kind) and h
    of [B, 2K, H, W] for the K transformed channels."""

    name: str
    shape: tuple  # full x shape, batch first

    def mask(self, device="cpu") -> Union[str, torch.Tensor]:
        if self.name not in ("bool", "compact"):
            return self.name
        if self.name == "compact" and len(self.shape) == 4:
            channels = torch.arange(self.shape[1]) % 3 == 0  # kept: channels 0, 3, ...
            return channels.view(-1, 1, 1).expand(self.shape[1:]).contiguous().to(device)
        g = torch.Generator().manual_seed(hash(self.shape) % 2**31)
        return (torch.rand(self.shape[1:], generator=g) < 0.5).to(device)

    def __str__(self) -> str:
        return f"{self.name}{list(self.shape)}"


MASK_CASES = [
    MaskCase("half", (3, 37)),  # feature split of vectors, odd width
    MaskCase("half", (2, 5, 7, 9)),  # channel split, odd channel count
    MaskCase("checkerboard", (2, 5, 7, 9)),  # odd height and width
    MaskCase("bool", (3, 37)),
    MaskCase("bool", (2, 3, 5, 7)),
    MaskCase("compact", (3, 37)),
    MaskCase("compact", (2, 5, 3, 4)),
]


@dataclass(frozen=True)
class Coupling:
    """One configuration of a coupling op; `scale=None` means additive. The "clip" map takes CLIP_BOUNDS."""

    mask: MaskCase
    scale: Optional[str] = "exp"
    flip: bool = False
    shift_first: bool = False
    reverse: bool = False
    clamp: float = 1.7
    h_layout: str = "scale_shift"

    @property
    def additive(self) -> bool:
        return self.scale is None

    @property
    def clamp_arg(self):
        """The op's clamp argument: CLIP_BOUNDS for "clip"."""
        return CLIP_BOUNDS if self.scale == "clip" else self.clamp

    def log_scale(self, s: torch.Tensor) -> torch.Tensor:
        """a(s_raw) by the reference's scale map."""
        high, low = (CLIP_BOUNDS[1], CLIP_BOUNDS[0]) if self.scale == "clip" else (self.clamp, 0.0)
        return reference.scale_map(s, self.scale, high, low)

    def h_shape(self) -> tuple:
        shape = list(self.mask.shape)
        channels = shape[1]
        if self.mask.name == "half":
            shape[1] = channels - channels // 2
        if self.mask.name == "compact":
            transformed = self.transformed_elements()
            if len(shape) == 4:  # a channel mask: the transformed channels, whole
                shape[1] = int(transformed[:, 0, 0].sum())
            else:
                shape = [shape[0], int(transformed.sum())]
        if not self.additive:
            shape[1] *= 2
        return tuple(shape)

    def inputs(self, dtype=torch.float32, seed=0, h_dtype=None):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.mask.shape, generator=g, dtype=torch.float64)
        h = torch.randn(self.h_shape(), generator=g, dtype=torch.float64)
        return x.to(dtype), h.to(h_dtype or dtype)

    def split(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_raw, t) of h in this case's layout."""
        return split_h(h, self.h_layout)

    def with_s(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """h with its s_raw replaced by `s` (its t kept)."""
        return join_h(s.to(h.dtype), self.split(h)[1], self.h_layout)

    def cancelling_inputs(self, dtype=torch.float32, seed=0):
        """(x, h) with s_raw from cancelling_terms("halves"): large log-scales, a log-det near zero."""
        x, h = self.inputs(dtype, seed)
        if self.additive:
            return x, h
        s_shape = self.split(h)[0].shape
        s = cancelling_terms(s_shape[0], math.prod(s_shape[1:]), "halves", seed=1000 + seed)
        return x, self.with_s(h, s.view(s_shape))

    def transformed_elements(self) -> torch.Tensor:
        """For checkerboard and bool masks: True where an element of a sample is transformed (SPEC section 1)."""
        if self.mask.name == "checkerboard":
            height, width = self.mask.shape[2:]
            i, j = torch.arange(height).view(height, 1), torch.arange(width).view(1, width)
            kept = (i + j) % 2 == (0 if self.flip else 1)
            return (~kept).expand(self.mask.shape[1:])
        mask = self.mask.mask()
        return mask if self.flip else ~mask

    def logdet_condition(self, h: torch.Tensor) -> torch.Tensor:
        """Per sample, sum_k |a(s_raw[k])| over the transformed elements, in float64: the condition of the log-det
        sum, which SPEC section 3 bounds the log-det's error by."""
        if self.additive:
            return torch.zeros(h.shape[0], dtype=torch.float64)
        terms = self.log_scale(self.split(h.double())[0]).abs()
        if self.mask.name in ("checkerboard", "bool"):  # s_raw has the sample's shape; only transformed ones count
            terms = torch.where(self.transformed_elements(), terms, 0.0)
        return terms.flatten(1).sum(1)

    def __call__(self, x, h, backend, mask=None):
        mask = self.mask.mask(x.device) if mask is None else mask
        if self.additive:
            return nf_kernels.additive_coupling(x, h, mask=mask, flip=self.flip, reverse=self.reverse, backend=backend)
        return nf_kernels.affine_coupling(
            x, h, mask=mask, flip=self.flip, scale=self.scale, clamp=self.clamp_arg, shift_first=self.shift_first,
            reverse=self.reverse, backend=backend, h_layout=self.h_layout,
        )  # fmt: skip

    @property
    def features(self) -> tuple[str, str, str]:
        """(scale, h_layout, mask kind): what a backend may or may not support (nf_kernels._dispatch)."""
        kind = {"bool": "tensor"}.get(self.mask.name, self.mask.name)
        return ("none" if self.additive else self.scale), self.h_layout, kind

    def __str__(self) -> str:
        kind = "additive" if self.additive else self.scale + ("-shift_first" if self.shift_first else "")
        layout = "" if self.additive or self.h_layout == "scale_shift" else f"-{self.h_layout}"
        return f"{self.mask}-{kind}{layout}{'-flip' if self.flip else ''}{'-reverse' if self.reverse else ''}"


# nf_kernels' own maps meet both shift orders in every case; the peers' maps (which no peer uses with
# shift_first, and whose code is the same for both orders) take them in turn, which keeps the matrix small enough.
BOTH_ORDERS = ("exp", "tanh", "atan", "sigmoid")


def all_couplings(mask_cases=MASK_CASES, reverse=(False, True)):
    """Every mask x flip x scale (with and without shift_first, plus additive) x direction; the h layouts taken in
    turn, so that every scale meets every layout over the masks."""
    cases = []
    for m, mask in enumerate(mask_cases):
        for flip in (False, True):
            for rev in reverse:
                cases.append(Coupling(mask, None, flip, False, rev))
                for j, scale in enumerate(SCALES):
                    orders = (False, True) if scale in BOTH_ORDERS else (bool((j + m + flip + rev) % 2),)
                    for shift_first in orders:
                        layout = H_LAYOUTS[(2 * j + shift_first + m + flip) % len(H_LAYOUTS)]
                        cases.append(Coupling(mask, scale, flip, shift_first, rev, h_layout=layout))
    return cases


def supports(backend: str, case: Coupling) -> bool:
    """Whether `backend` computes `case` (the dispatcher's answer): the others refuse it (tests/test_coupling_errors.py)."""
    return _dispatch.why_unsupported(backend, *case.features) is None


def with_backends(backends, cases):
    """(case, backend) parameters for every backend that supports each case."""
    return [pytest.param(case, backend, id=f"{case}-{backend}") for case in cases for backend in backends
            if supports(backend, case)]  # fmt: skip


@pytest.fixture(autouse=True)
def _poisoned_outputs():
    """Fused backends fill their outputs with NaN before the kernels write them: an unwritten element fails."""
    with nf_kernels.poison_outputs():
        yield


@pytest.fixture
def small_triton_blocks(monkeypatch):
    """Make the Triton kernels split each sample over several programs (the two-stage log-det reduction)."""
    from nf_kernels.backends.triton_kernels import launch

    monkeypatch.setattr(launch, "MAX_BLOCK", 16)


@pytest.fixture
def aot_eager_graphs(monkeypatch):
    """torch.compile with "aot_eager" instead of Inductor (graph capture and AOTAutograd's forward and backward
    graphs, without the code generation that takes minutes on a small CPU); the graphs compiled are listed here."""
    aot_eager = torch._dynamo.lookup_backend("aot_eager")
    graphs = []

    def counting_aot_eager(graph, example_inputs):
        graphs.append(graph)
        return aot_eager(graph, example_inputs)

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=counting_aot_eager))
    return graphs
