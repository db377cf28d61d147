"""Base distributions of the latent: standard normal, and the standard logistic that NICE used.

They are modules (with no parameters) so that `flow.to(device, dtype)` moves them along with the layers.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import check_num_samples


class _FactorizedStandard(nn.Module):
    """A distribution of independent, identically distributed elements over samples of `shape`."""

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if any(s <= 0 for s in self.shape):
            raise ValueError(f"{type(self).__name__} needs a shape of positive sizes, got {self.shape}")
        # Follows the module's device and dtype, which sample() then uses.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _element_log_density(self, z: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _standard_sample(self, size: tuple[int, ...], generator: Optional[torch.Generator]) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def log_prob(self, z: Tensor) -> Tensor:
        """Natural-log density of each sample of the batch `z`, shape [B]."""
        if tuple(z.shape[1:]) != self.shape:
            raise ValueError(f"{type(self).__name__} is over samples of shape {self.shape}, got a batch {tuple(z.shape)}")
        return self._element_log_density(z).flatten(1).sum(1)

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """`num_samples` samples, shape [num_samples, *shape], on this module's device and dtype."""
        return self._standard_sample((check_num_samples(num_samples), *self.shape), generator)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class StandardNormal(_FactorizedStandard):
    """N(0, I) over samples of `shape`.

    >>> base = StandardNormal((2,))
    >>> base.log_prob(torch.zeros(1, 2))
    tensor([-1.8379])
    """

    def _element_log_density(self, z: Tensor) -> Tensor:
        return -0.5 * z.square() - 0.5 * math.log(2 * math.pi)

    def _standard_sample(self, size, generator):
        return torch.randn(size, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)


class StandardLogistic(_FactorizedStandard):
    """Independent standard logistic elements (NICE's prior): log p(z) = -softplus(z) - softplus(-z).

    >>> StandardLogistic((1,)).log_prob(torch.zeros(1, 1))   # log(1/4)
    tensor([-1.3863])
    """

    def _element_log_density(self, z: Tensor) -> Tensor:
        return -F.softplus(z) - F.softplus(-z)

    def _standard_sample(self, size, generator):
        # Inverse CDF of a uniform draw kept away from 0 and 1, where the logit is infinite.
        tiny = torch.finfo(self._anchor.dtype).tiny
        u = torch.rand(size, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)
        u = u.clamp(tiny, 1 - torch.finfo(self._anchor.dtype).eps)
        return torch.log(u) - torch.log1p(-u)
