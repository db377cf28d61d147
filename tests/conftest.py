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


@dataclass(frozen=True)
class MaskCase:
    """A mask with the sample shape it is tested on."""

    name: str
    shape: tuple  # full x shape, batch first

    def mask(self, device="cpu") -> Union[str, torch.Tensor]:
        if self.name != "bool":
            return self.name
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
]


@dataclass(frozen=True)
class Coupling:
    """One configuration of a coupling op; `scale=None` means additive."""

    mask: MaskCase
    scale: Optional[str] = "exp"
    flip: bool = False
    shift_first: bool = False
    reverse: bool = False
    clamp: float = 1.7

    @property
    def additive(self) -> bool:
        return self.scale is None

    def h_shape(self) -> tuple:
        shape = list(self.mask.shape)
        channels = shape[1]
        if self.mask.name == "half":
            shape[1] = channels - channels // 2
        if not self.additive:
            shape[1] *= 2
        return tuple(shape)

    def inputs(self, dtype=torch.float32, seed=0, h_dtype=None):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.mask.shape, generator=g, dtype=torch.float64)
        h = torch.randn(self.h_shape(), generator=g, dtype=torch.float64)
        return x.to(dtype), h.to(h_dtype or dtype)

    def cancelling_inputs(self, dtype=torch.float32, seed=0):
        """(x, h) with s_raw from cancelling_terms("halves"): large log-scales, a log-det near zero."""
        x, h = self.inputs(dtype, seed)
        if self.additive:
            return x, h
        s_shape = (h.shape[0], h.shape[1] // 2, *h.shape[2:])
        s = cancelling_terms(s_shape[0], math.prod(s_shape[1:]), "halves", seed=1000 + seed)
        h = h.clone()
        h[:, : s_shape[1]] = s.view(s_shape).to(h.dtype)
        return x, h

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
        s = h.double()[:, : h.shape[1] // 2]
        terms = reference.scale_map(s, self.scale, self.clamp).abs()
        if self.mask.name != "half":  # there s_raw has the sample's shape and only transformed elements count
            terms = torch.where(self.transformed_elements(), terms, 0.0)
        return terms.flatten(1).sum(1)

    def __call__(self, x, h, backend, mask=None):
        mask = self.mask.mask(x.device) if mask is None else mask
        if self.additive:
            return nf_kernels.additive_coupling(x, h, mask=mask, flip=self.flip, reverse=self.reverse, backend=backend)
        return nf_kernels.affine_coupling(
            x, h, mask=mask, flip=self.flip, scale=self.scale, clamp=self.clamp,
            shift_first=self.shift_first, reverse=self.reverse, backend=backend,
        )  # fmt: skip

    def __str__(self) -> str:
        kind = "additive" if self.additive else self.scale + ("-shift_first" if self.shift_first else "")
        return f"{self.mask}-{kind}{'-flip' if self.flip else ''}{'-reverse' if self.reverse else ''}"


def all_couplings(mask_cases=MASK_CASES, reverse=(False, True)):
    """Every mask x flip x scale (with and without shift_first, plus additive) x direction."""
    cases = []
    for mask in mask_cases:
        for flip in (False, True):
            for rev in reverse:
                cases.append(Coupling(mask, None, flip, False, rev))
                for scale in SCALES:
                    for shift_first in (False, True):
                        cases.append(Coupling(mask, scale, flip, shift_first, rev))
    return cases


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
