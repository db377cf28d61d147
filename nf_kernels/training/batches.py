"""Training batches that depend only on (seed, step): the reason resumed and distributed runs are exact.

The global batch of step ``s`` is the same set of samples, with the same dequantization noise, whether the run
was interrupted or not and whatever the number of processes. ``DistributedSampler`` gives rank ``r`` the
positions ``r, r + W, r + 2W, ...`` of each epoch's permutation, so the union of the ranks' batches at a step is
the single-process batch; the noise for the whole global batch is drawn from a generator seeded by
``(seed, step)`` and each rank takes its rows the same interleaved way.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.utils.data import DistributedSampler

from ..data import DataError, FlowDataset, dequantize
from .distributed import DistributedContext

Batch = tuple[torch.Tensor, Optional[torch.Tensor]]  # (samples, context labels or None)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s dequantization noise: independent of anything that happened before."""
    return torch.Generator().manual_seed(seed * 2**32 + step)


class BatchStream:
    """Batches of this process's share of the training set, addressed by step.

    >>> from nf_kernels.data import load_dataset
    >>> stream = BatchStream(load_dataset("moons"), batch_size=64, seed=0, context=DistributedContext())
    >>> stream
    BatchStream(batch_size=64, per_process=64, steps_per_epoch=150)
    >>> stream.batch(0)[0].shape
    torch.Size([64, 2])
    """

    def __init__(
        self,
        data: FlowDataset,
        *,
        batch_size: int,
        seed: int,
        context: DistributedContext,
        conditional: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size <= 0:
            raise DataError(f"the batch size must be positive, got {batch_size}")
        if batch_size % context.world_size:
            raise DataError(f"the batch size {batch_size} is the global batch: it must be divisible by the "
                            f"{context.world_size} processes")  # fmt: skip
        if conditional and data.train_labels is None:
            raise DataError(f"{data.name} has no labels, so a class-conditional model cannot be trained on it")
        self.data, self.seed, self.context, self.conditional, self.dtype = data, seed, context, conditional, dtype
        self.batch_size, self.per_process = batch_size, batch_size // context.world_size
        self.sampler = DistributedSampler(
            data.train, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed
        )
        self.steps_per_epoch = len(self.sampler) // self.per_process
        if self.steps_per_epoch == 0:
            raise DataError(f"the batch size {batch_size} is larger than the {len(data.train)} training samples "
                            f"of {data.name}")  # fmt: skip
        self._epoch: Optional[int] = None
        self._order: list[int] = []

    def _indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, list(self.sampler)
        start = position * self.per_process
        return torch.tensor(self._order[start : start + self.per_process])

    def batch(self, step: int) -> Batch:
        """This process's samples of global step ``step`` (0-based), on the training device."""
        indices = self._indices(step)
        samples = self.data.train[indices]
        if self.data.discrete:
            noise = torch.rand(self.batch_size, *self.data.sample_shape, generator=step_generator(self.seed, step))
            samples = dequantize(samples, self.data.levels, noise[self.context.rank :: self.context.world_size])
        labels = self.data.train_labels[indices].to(self.context.device) if self.conditional else None
        return samples.to(self.context.device, self.dtype), labels

    def global_batch(self, step: int) -> Batch:
        """The whole batch of ``step`` as one process would see it (used to initialize ActNorm identically)."""
        alone = DistributedContext(device=self.context.device)
        return BatchStream(self.data, batch_size=self.batch_size, seed=self.seed, context=alone,
                           conditional=self.conditional, dtype=self.dtype).batch(step)  # fmt: skip

    def __repr__(self) -> str:
        return f"BatchStream(batch_size={self.batch_size}, per_process={self.per_process}, steps_per_epoch={self.steps_per_epoch})"
