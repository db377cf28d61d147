"""NICE's learned diagonal scaling, the last layer of a NICE model."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .base import FlowLayer


class Scaling(FlowLayer):
    """NICE's learned diagonal scaling: one log-scale per element of a sample.

    ::

        y = x * exp(log_scale)        (log_scale of shape input_shape, broadcast over the batch)
        logdet = sum(log_scale)

    Starts as the identity (``log_scale = 0``).

    Args:
        input_shape: one sample's shape, without the batch dim.

    Returns:
        Called as ``layer(x)`` with ``x`` of shape ``[B, *input_shape]``: ``(y, logdet)``, ``y`` of ``x``'s shape
        and dtype, ``logdet`` of shape ``[B]`` (float32 for float16 and bfloat16 data, else ``x``'s dtype).
        ``layer.inverse(y)`` returns ``(x, -logdet)``.

    Example:
        >>> layer = Scaling((3,))
        >>> with torch.no_grad(): _ = layer.log_scale.fill_(1.0)
        >>> layer(torch.ones(2, 3))[1].tolist()
        [3.0, 3.0]
    """

    def __init__(self, input_shape: Sequence[int]):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.log_scale = nn.Parameter(torch.zeros(self.input_shape))

    def _apply_scale(self, x: Tensor, sign: float) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        log_scale = sign * self.log_scale
        logdet = log_scale.sum().to(torch.promote_types(x.dtype, torch.float32)).expand(x.shape[0])
        return x * torch.exp(log_scale).to(x.dtype), logdet

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._apply_scale(x, 1.0)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._apply_scale(y, -1.0)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}"
