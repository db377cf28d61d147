"""The one shape every data source is turned into: a :class:`FlowDataset` with fixed train and test tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import UserError
from ..flows.dequantize import dequantize as flows_dequantize


class DataError(UserError, ValueError):
    """A data set that cannot be loaded or used; the message says what is wrong and what would work."""


@dataclass(frozen=True, repr=False)
class FlowDataset:
    """Train and test samples of one data set, split once and for all.

    Continuous data (the 2-D toys, float tensor files) has ``levels=None`` and float32 samples.
    Discrete data (digits, 8-bit images, integer tensor files) has ``levels=L`` and integer samples in
    ``[0, L)``; training dequantizes them into ``[0, 1)`` (see :func:`nf_kernels.data.dequantize`).

    >>> data = FlowDataset("toy", torch.zeros(8, 2), torch.zeros(2, 2))
    >>> data
    FlowDataset('toy', train=8, test=2, sample_shape=(2,), continuous)
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    levels: Optional[int] = None
    train_labels: Optional[torch.Tensor] = None
    test_labels: Optional[torch.Tensor] = None
    num_classes: Optional[int] = None

    def __post_init__(self) -> None:
        if self.train.shape[1:] != self.test.shape[1:]:
            raise DataError(f"{self.name}: train samples {tuple(self.train.shape[1:])} and test samples "
                            f"{tuple(self.test.shape[1:])} differ in shape")  # fmt: skip
        if len(self.train) == 0 or len(self.test) == 0:
            raise DataError(f"{self.name}: needs at least one train and one test sample "
                            f"(got {len(self.train)} and {len(self.test)})")  # fmt: skip

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def num_dims(self) -> int:
        """D, the number of dimensions of one sample (what bits/dim divides by)."""
        return math.prod(self.sample_shape)

    @property
    def is_image(self) -> bool:
        return len(self.sample_shape) == 3

    @property
    def discrete(self) -> bool:
        return self.levels is not None

    def __repr__(self) -> str:
        kind = f"levels={self.levels}" if self.discrete else "continuous"
        classes = f", num_classes={self.num_classes}" if self.num_classes else ""
        return (f"FlowDataset({self.name!r}, train={len(self.train)}, test={len(self.test)}, "
                f"sample_shape={self.sample_shape}, {kind}{classes})")  # fmt: skip


def split_indices(count: int, test_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random (train, test) partition of ``range(count)``: the same for a given count and seed, always.

    The seed is the data seed, not the training seed: changing ``--seed`` must never move samples between splits.

    >>> train, test = split_indices(10, 0.2)
    >>> len(train), len(test), sorted(train.tolist() + test.tolist()) == list(range(10))
    (8, 2, True)
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test fraction must be in (0, 1), got {test_fraction}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    num_test = max(1, round(count * test_fraction))
    return order[num_test:], order[:num_test]


def dequantize(levels_batch: torch.Tensor, levels: int, noise: torch.Tensor) -> torch.Tensor:
    """Uniform dequantization: integer level ``k`` becomes ``(k + u) / levels`` with ``u`` in ``[0, 1)``.

    The noise is passed in (rather than drawn here) so the caller decides which generator makes it: that is what
    lets a resumed or a distributed run see exactly the same noise as an uninterrupted single-process run.

    It is :func:`nf_kernels.flows.dequantize` with the noise as a required argument.

    >>> dequantize(torch.tensor([0, 16]), 17, torch.tensor([0.5, 0.5]))
    tensor([0.0294, 0.9706])
    """
    return flows_dequantize(levels_batch, levels, noise=noise)
