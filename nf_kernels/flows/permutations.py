"""Fixed permutations of dim 1 (features or channels): reverse, and a seeded random one."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import FlowLayer, check_batch_channels, check_channel_count, zero_logdet


class Permutation(FlowLayer):
    """A fixed permutation of dim 1 (features or channels): ``y = x[:, permutation]``, with ``logdet = 0``.

    The permutation is a buffer, saved in the state_dict.

    Args:
        permutation: a 1-D integer tensor (or sequence) holding each of ``0, ..., n - 1`` once, ``n >= 1``.

    Returns:
        Called as ``layer(x)`` with ``x`` of shape ``[B, n, ...]``: ``(y, logdet)``, ``y`` of ``x``'s shape and
        dtype, ``logdet`` zeros of shape ``[B]`` (float32 for float16 and bfloat16 data, else ``x``'s dtype).
        ``layer.inverse(y)`` undoes the permutation.

    Example:
        >>> layer = Permutation(torch.tensor([2, 0, 1]))
        >>> layer(torch.tensor([[10.0, 20.0, 30.0]]))[0]
        tensor([[30., 10., 20.]])
    """

    def __init__(self, permutation: Tensor):
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        n = permutation.numel()
        if n == 0 or permutation.dim() != 1 or not torch.equal(permutation.sort().values, torch.arange(n)):
            raise ValueError(f"not a permutation of 0..{n - 1}: {permutation.tolist()}")
        self.num_features = n
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def output_shape(self, input_shape):
        return check_channel_count(type(self).__name__, self.num_features, input_shape)

    def _permute(self, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        check_batch_channels(type(self).__name__, self.num_features, x, entries="entries")
        return x.index_select(1, index), zero_logdet(x)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._permute(x, self.permutation)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._permute(y, self.inverse_permutation)

    def extra_repr(self) -> str:
        return str(self.num_features)


class ReversePermutation(Permutation):
    """Reverses the order along dim 1: ``y = x[:, ::-1]``, with ``logdet = 0`` (a :class:`Permutation`).

    Args:
        num_features: the size of dim 1 of the data (int >= 1).

    Returns:
        As for :class:`Permutation`: ``(y, logdet)`` from ``layer(x)``, ``x`` of shape ``[B, num_features, ...]``.

    Example:
        >>> ReversePermutation(3)(torch.tensor([[1.0, 2.0, 3.0]]))[0]
        tensor([[3., 2., 1.]])
    """

    def __init__(self, num_features: int):
        super().__init__(torch.arange(num_features - 1, -1, -1))


class RandomPermutation(Permutation):
    """A fixed random shuffle of dim 1, drawn once at construction, with ``logdet = 0`` (a :class:`Permutation`).

    Args:
        num_features: the size of dim 1 of the data (int >= 1).
        generator: the random generator that draws the shuffle; default None (torch's global one). Pass a seeded
            one to draw the same shuffle again.

    Returns:
        As for :class:`Permutation`: ``(y, logdet)`` from ``layer(x)``, ``x`` of shape ``[B, num_features, ...]``.

    Example:
        >>> layer = RandomPermutation(4, generator=torch.Generator().manual_seed(0))
        >>> x = torch.randn(2, 4)
        >>> torch.equal(layer.inverse(layer(x)[0])[0], x)
        True
    """

    def __init__(self, num_features: int, generator: Optional[torch.Generator] = None):
        super().__init__(torch.randperm(num_features, generator=generator))
