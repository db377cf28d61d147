"""Base distributions of the latent: standard normal, and the standard logistic that NICE used.

They are modules (with no parameters) so that `flow.to(device, dtype)` moves them along with the layers.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import forward_ad

from .base import check_num_samples


class _FactorizedStandard(nn.Module):
    """A distribution of independent, identically distributed elements over samples of `shape`.

    Subclasses give the density of one element and a sampler; the arguments and methods are documented here.

    Args:
        shape: one sample's shape, without the batch dim (positive sizes), e.g. a flow's latent shape.
    """

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if any(s <= 0 for s in self.shape):
            raise ValueError(f"{type(self).__name__} needs a shape of positive sizes, got {self.shape}")
        # Follows the module's device and dtype, which sample() then uses.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _sample_log_density(self, z: Tensor) -> Tensor:  # pragma: no cover
        """``log p`` of each row of the flattened batch `z` ``[B, N]``, shape ``[B]``."""
        raise NotImplementedError

    def _standard_sample(self, size: tuple[int, ...], generator: Optional[torch.Generator]) -> Tensor:
        raise NotImplementedError  # pragma: no cover

    def log_prob(self, z: Tensor) -> Tensor:
        """Natural-log density of each sample: the sum of the elements' log-densities.

        Args:
            z: a batch ``[B, *shape]``, floating point.

        Returns:
            ``log p(z[b])`` for each sample ``b``, shape ``[B]``, in ``z``'s dtype.

        Example:
            >>> StandardNormal((2, 3)).log_prob(torch.zeros(4, 2, 3)).shape
            torch.Size([4])
        """
        if tuple(z.shape[1:]) != self.shape:
            raise ValueError(f"{type(self).__name__} is over samples of shape {self.shape}, got a batch {tuple(z.shape)}")
        return self._sample_log_density(z.flatten(1))

    def sample(self, num_samples: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Draw `num_samples` independent samples.

        Args:
            num_samples: how many (int >= 0).
            generator: the random generator to draw from; default None (torch's global one).

        Returns:
            A tensor ``[num_samples, *shape]`` on this module's device and in its dtype (float32 unless moved
            with ``.to``).

        Example:
            >>> StandardNormal((2, 3)).double().sample(4, generator=torch.Generator().manual_seed(0)).dtype
            torch.float64
        """
        return self._standard_sample((check_num_samples(num_samples), *self.shape), generator)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class _SquaredNorm(torch.autograd.Function):
    """``|z_b|^2`` of each row of `z` ``[B, N]``, with a backward of one product, ``2 (g_b z_b)`` (differentiable: a
    second derivative works; vmap runs it by its own rule)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(z: Tensor) -> Tensor:
        return torch.linalg.vecdot(z, z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        # (g z) doubled, not (2 g) z: vecdot's backward adds g z to itself, and these are its bits, overflow and
        # subnormal products included.
        return (z * grad.unsqueeze(-1)).mul_(2)


def squared_norm(z: Tensor) -> Tensor:
    """``|z_b|^2`` of each row of `z` ``[B, N]``.

    The base density is work around the flow that costs passes over the whole latent of its own. Through autograd,
    ``vecdot(z, z)`` is a product and a sum, and its backward differentiates the product in each factor and adds the
    two: three passes over ``[B, N]`` where a product and an in-place doubling do, which :class:`_SquaredNorm` is.
    Its gradient is the same bits (``g z + g z`` is ``2 (g z)`` exactly, overflow included). It pays from about 2^18
    elements: a forward and backward over ``[256, 4096]`` took 1.47 ms through vecdot and 1.12 ms through it, over
    ``[256, 1024]`` 0.35 and 0.32 ms, over ``[256, 512]`` 0.11 and 0.13 ms, over ``[256, 64]`` 31 and 54 us (the
    Python function's own cost; one thread, AVX-512 Xeon). torch.compile fuses vecdot's passes by itself, and
    forward-mode AD needs vecdot's own rule: both take vecdot.
    """
    if z.numel() < _SQUARED_NORM_MIN_ELEMENTS or torch.compiler.is_compiling() or forward_ad._current_level >= 0:
        return torch.linalg.vecdot(z, z)
    return _SquaredNorm.apply(z)


_SQUARED_NORM_MIN_ELEMENTS = 1 << 18


class StandardNormal(_FactorizedStandard):
    """The standard normal N(0, I) over samples of `shape`: ``log p(z) = sum_i -z_i^2 / 2 - log(2 pi) / 2``.

    Args:
        shape: one sample's shape, without the batch dim (positive sizes).

    Returns:
        ``log_prob(z)`` of a batch ``[B, *shape]`` is ``[B]``; ``sample(n, generator=None)`` is ``[n, *shape]``.

    Example:
        >>> base = StandardNormal((2,))
        >>> base.log_prob(torch.zeros(1, 2))
        tensor([-1.8379])
        >>> base.sample(5).shape
        torch.Size([5, 2])
    """

    def _sample_log_density(self, z: Tensor) -> Tensor:
        return -0.5 * squared_norm(z) - (0.5 * math.log(2 * math.pi)) * z.shape[1]

    def _standard_sample(self, size, generator):
        return torch.randn(size, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)


class StandardLogistic(_FactorizedStandard):
    """Independent standard logistic elements over samples of `shape`, NICE's prior.

    ``log p(z) = sum_i -softplus(z_i) - softplus(-z_i)``; samples are ``log(u) - log(1 - u)``, ``u ~ U(0, 1)``.

    Args:
        shape: one sample's shape, without the batch dim (positive sizes).

    Returns:
        ``log_prob(z)`` of a batch ``[B, *shape]`` is ``[B]``; ``sample(n, generator=None)`` is ``[n, *shape]``.

    Example:
        >>> StandardLogistic((1,)).log_prob(torch.zeros(1, 1))   # log(1/4)
        tensor([-1.3863])
        >>> StandardLogistic((3,)).sample(2).shape
        torch.Size([2, 3])
    """

    def _sample_log_density(self, z: Tensor) -> Tensor:
        return (-F.softplus(z) - F.softplus(-z)).sum(1)

    def _standard_sample(self, size, generator):
        # Inverse CDF of a uniform draw kept away from 0 and 1, where the logit is infinite.
        tiny = torch.finfo(self._anchor.dtype).tiny
        u = torch.rand(size, generator=generator, device=self._anchor.device, dtype=self._anchor.dtype)
        u = u.clamp(tiny, 1 - torch.finfo(self._anchor.dtype).eps)
        return torch.log(u) - torch.log1p(-u)
