"""What one op benchmark measures: an :class:`OpCase` names the op, direction, mask, dtype and size, and builds
the inputs and the :class:`~nf_kernels._arguments.CouplingConfig` every provider receives. An
:class:`OverheadCase` is the "op-layer overhead" case: one shape at which each layer between the public call and
the kernel is timed apart (overhead_runner.py).

Sizes count the elements of ``x`` (all samples together). Image-shaped inputs ``[B, 4, H, W]`` are used so that
both masks apply to the same tensors: the sample is ``4 x 64 x 64`` (2^14 elements) once the size allows, and the
batch grows with the size, as it does when a model is trained at a larger batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from .._arguments import ADDITIVE, CouplingConfig
from .._masks import expected_h_shape

OPS = ("affine", "additive")
DIRECTIONS = ("forward", "inverse", "forward+backward")
MASKS = ("half", "checkerboard")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

CHANNELS = 4  # even, so the "half" mask transforms exactly half of every sample (the SPEC's 3*B*N count)
MAX_SAMPLE_NUMEL = CHANNELS * 64 * 64


def sample_shape(numel: int) -> tuple[int, int, int]:
    """(C, H, W) of one sample for a benchmark of `numel` elements in all.

    >>> sample_shape(2**20), sample_shape(2**8)
    ((4, 64, 64), (4, 8, 8))
    """
    if numel < 4 * CHANNELS or numel & (numel - 1):
        raise ValueError(f"benchmark sizes are powers of two of at least {4 * CHANNELS} elements, got {numel}")
    spatial = min(numel, MAX_SAMPLE_NUMEL) // CHANNELS
    height = 1 << ((spatial.bit_length() - 1) // 2)  # the larger side is W when the exponent is odd
    return CHANNELS, height, spatial // height


@dataclass(frozen=True)
class OpCase:
    """One op configuration at one size.

    >>> case = OpCase("affine", "forward+backward", "half", "bf16", 2**16)
    >>> case
    OpCase(affine forward+backward half bf16 2^16 [4, 4, 64, 64])
    >>> case.config.reverse, case.h_shape
    (False, (4, 4, 64, 64))
    """

    op: str  # "affine" or "additive"
    direction: str  # "forward", "inverse" or "forward+backward"
    mask: str  # "half" or "checkerboard"
    dtype: str  # a key of DTYPES
    numel: int  # elements of x, all samples together
    scale: str = "exp"  # the affine scale map (ignored for additive)

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("op", self.op, OPS), ("direction", self.direction, DIRECTIONS), ("mask", self.mask, MASKS),
            ("dtype", self.dtype, tuple(DTYPES)),
        ):  # fmt: skip
            if value not in valid:
                raise ValueError(f"unknown {name} {value!r}: valid choices are {', '.join(map(repr, valid))}")
        sample_shape(self.numel)  # validates the size

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        sample = sample_shape(self.numel)
        return (self.numel // (sample[0] * sample[1] * sample[2]), *sample)

    @property
    def additive(self) -> bool:
        return self.op == "additive"

    @property
    def h_shape(self) -> tuple[int, ...]:
        """Shape of the conditioner output: `h` (s and t) for affine, `t` alone for additive."""
        return expected_h_shape(torch.Size(self.shape), self.mask, self.additive)

    @property
    def backward(self) -> bool:
        return self.direction == "forward+backward"

    @property
    def config(self) -> CouplingConfig:
        return CouplingConfig(
            mask_kind=self.mask, flip=False, scale=ADDITIVE if self.additive else self.scale, clamp=2.0,
            shift_first=False, reverse=self.direction == "inverse",
        )  # fmt: skip

    @property
    def group(self) -> tuple[str, str, str, str]:
        """Everything but the size: the cases one line of a plot (or one compiled graph) covers."""
        return (self.op, self.direction, self.mask, self.dtype)

    def inputs(self, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, h) on `device`: x standard normal, h scaled so that exp(s) stays moderate in every dtype."""
        generator = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(self.shape, generator=generator, device=device, dtype=self.torch_dtype)
        h = torch.randn(self.h_shape, generator=generator, device=device, dtype=self.torch_dtype).mul_(0.5)
        return x, h

    def label(self) -> str:
        return f"{self.op} {self.direction} {self.mask} {self.dtype} 2^{self.numel.bit_length() - 1}"

    def __repr__(self) -> str:
        return f"OpCase({self.label()} {list(self.shape)})"


def op_cases(
    sizes: Iterable[int],
    dtypes: Sequence[str] = tuple(DTYPES),
    ops: Sequence[str] = OPS,
    directions: Sequence[str] = DIRECTIONS,
    masks: Sequence[str] = MASKS,
) -> Iterator[OpCase]:
    """Every combination, grouped so that the sizes of one configuration come one after another.

    >>> [c.label() for c in op_cases([2**16, 2**18], ["fp32"], ["affine"], ["forward"], ["half"])]
    ['affine forward half fp32 2^16', 'affine forward half fp32 2^18']
    """
    sizes = list(sizes)
    for op, direction, mask, dtype in itertools.product(ops, directions, masks, dtypes):
        for numel in sizes:
            yield OpCase(op, direction, mask, dtype, numel)


# The op-layer overhead case: [256, D] vectors, the "half" mask, scale "exp". At D = 2 the kernel does next to
# nothing and the per-call cost of the layers shows alone; at D = 4096 the kernel dominates.
OVERHEAD_SHAPES = ((256, 2), (256, 64), (256, 4096))


@dataclass(frozen=True)
class OverheadCase:
    """One shape of the op-layer overhead case.

    >>> OverheadCase((256, 64))
    OverheadCase(affine half fp32 [256, 64])
    """

    shape: tuple[int, ...]
    dtype: str = "fp32"

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"an overhead case is a batch of vectors [B, D], got shape {self.shape}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}: valid choices are {', '.join(map(repr, DTYPES))}")

    @property
    def config(self) -> CouplingConfig:
        return CouplingConfig("half", False, "exp", 2.0, False, False)

    @property
    def h_shape(self) -> tuple[int, ...]:
        return expected_h_shape(torch.Size(self.shape), "half", False)

    def inputs(self, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator(device=device).manual_seed(seed)
        x = torch.randn(self.shape, generator=generator, device=device, dtype=DTYPES[self.dtype])
        h = torch.randn(self.h_shape, generator=generator, device=device, dtype=DTYPES[self.dtype]).mul_(0.5)
        return x, h

    def label(self) -> str:
        return f"affine half {self.dtype} {list(self.shape)}"

    def __repr__(self) -> str:
        return f"OverheadCase({self.label()})"


def overhead_cases(shapes: Iterable[tuple[int, ...]] = OVERHEAD_SHAPES, dtype: str = "fp32") -> tuple[OverheadCase, ...]:
    return tuple(OverheadCase(tuple(shape), dtype) for shape in shapes)
