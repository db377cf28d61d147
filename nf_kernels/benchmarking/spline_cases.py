"""What one spline op benchmark measures: a :class:`SplineOpCase` names the direction, dtype, bins and size, and
builds the inputs every implementation receives (benchmarks/spline_op.py, spline_op_runner.py).

The layout is a vector coupling as nflows lays it out: ``x`` of ``[B, 2D]`` with the "half" mask (``D`` kept
features, then ``D`` transformed ones) and ``params`` of ``[B, D * P]``, each transformed element's ``P = 3K - 1``
parameters side by side (``params.view(B, D, P)`` is nflows' ``[..., P]``). Sizes count the transformed elements
``T = B * D``; the batch grows with the size.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from .._spline_arguments import spline_params_per_element
from .cases import DIRECTIONS, DTYPES

SPLINE_DTYPES = ("fp32", "bf16")
DEFAULT_FEATURES = 64  # D: transformed features a sample (a tabular flow of 128 features)
BOUND = 3.0  # the spline's interval [-3, 3]; standard-normal inputs fall outside it 0.3% of the time


@dataclass(frozen=True)
class SplineOpCase:
    """One spline op configuration at one size.

    >>> case = SplineOpCase("forward+backward", "fp32", 8, 2**10)
    >>> case
    SplineOpCase(spline forward+backward fp32 K=8 2^10 [16, 128])
    >>> case.params_shape, case.per_element, case.reverse, case.backward
    ((16, 1472), 23, False, True)
    """

    direction: str  # "forward", "inverse" or "forward+backward"
    dtype: str  # "fp32" or "bf16"
    bins: int  # K
    elements: int  # transformed elements T, all samples together
    features: int = DEFAULT_FEATURES  # transformed features a sample (D); as many are kept

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}: valid choices are {DIRECTIONS}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}: valid choices are {tuple(DTYPES)}")
        if self.bins < 1 or self.features < 1 or self.elements < self.features or self.elements % self.features:
            raise ValueError(f"need bins >= 1 and elements a multiple of features, got {self}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def per_element(self) -> int:
        return spline_params_per_element(self.bins)

    @property
    def batch(self) -> int:
        return self.elements // self.features

    @property
    def shape(self) -> tuple[int, int]:
        return (self.batch, 2 * self.features)

    @property
    def params_shape(self) -> tuple[int, int]:
        return (self.batch, self.features * self.per_element)

    @property
    def reverse(self) -> bool:
        return self.direction == "inverse"

    @property
    def backward(self) -> bool:
        return self.direction == "forward+backward"

    @property
    def group(self) -> tuple[int, str]:
        """(bins, dtype): the cases one set of inputs and one correctness check serve."""
        return (self.bins, self.dtype)

    def inputs(self, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, params) on the CPU, both standard normal: x mostly inside [-BOUND, BOUND], where the spline works
        (outside it every implementation just copies), params as a freshly initialized conditioner gives them. The
        inverse takes the same x as its y."""
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(self.shape, generator=generator).to(self.torch_dtype)
        params = torch.randn(self.params_shape, generator=generator).to(self.torch_dtype)
        return x, params

    def label(self) -> str:
        power = self.elements.bit_length() - 1
        size = f"2^{power}" if self.elements == 1 << power else str(self.elements)
        return f"spline {self.direction} {self.dtype} K={self.bins} {size}"

    def __repr__(self) -> str:
        return f"SplineOpCase({self.label()} {list(self.shape)})"


def spline_op_cases(
    elements: int,
    bins: Iterable[int] = (8, 16),
    dtypes: Sequence[str] = SPLINE_DTYPES,
    directions: Sequence[str] = DIRECTIONS,
    features: int = DEFAULT_FEATURES,
) -> Iterator[SplineOpCase]:
    """Every combination, the directions of one (bins, dtype) one after another.

    >>> [c.label() for c in spline_op_cases(2**10, [8], ["fp32"], ["forward", "inverse"])]
    ['spline forward fp32 K=8 2^10', 'spline inverse fp32 K=8 2^10']
    """
    for bins, dtype, direction in itertools.product(bins, dtypes, directions):
        yield SplineOpCase(direction, dtype, bins, elements, features)
