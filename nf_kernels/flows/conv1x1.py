"""Glow's invertible 1x1 convolution, LU-decomposed: a learned channel mixing with a cheap, safe log-det."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .base import FlowLayer, check_batch_channels, check_channel_count


class Invertible1x1Conv(FlowLayer):
    """Glow's invertible 1x1 convolution: a learned mixing of dim 1 at every position, LU-parameterized.

    At every position (every pixel of an image; the one position of a vector)::

        y[:, i] = sum_j W[i, j] * x[:, j],    W = P @ L @ (U + diag(sign_s * exp(log_s)))
        logdet = (H * W) * sum(log_s)         (1 position for vectors)

    P is a fixed permutation, L unit lower triangular and U strictly upper triangular (both learned), and the
    diagonal is learned as fixed signs and learned log-magnitudes, so ``log|det W| = sum(log_s)`` without ever
    taking the log of a determinant. Initialized from a random rotation, as in Glow. The mixing runs in the data's
    precision, also under autocast, so that the inverse stays exact.

    Args:
        num_channels: the size of dim 1 of the data (int >= 1).
        generator: the random generator that draws the initial rotation; default None (torch's global one).

    Returns:
        Called as ``layer(x)`` with ``x`` of shape ``[B, num_channels, ...]``: ``(y, logdet)``, ``y`` of ``x``'s
        shape and dtype, ``logdet`` of shape ``[B]`` (float32 for float16 and bfloat16 data, else ``x``'s dtype).
        ``layer.inverse(y)`` returns ``(x, -logdet)``.

    Example:
        >>> layer = Invertible1x1Conv(4)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> y, logdet = layer(x)
        >>> x_back, _ = layer.inverse(y)
        >>> torch.allclose(x_back, x, atol=1e-5)
        True
    """

    def __init__(self, num_channels: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        if num_channels <= 0:
            raise ValueError(f"Invertible1x1Conv needs a positive channel count, got {num_channels}")
        self.num_channels = int(num_channels)
        rotation, _ = torch.linalg.qr(torch.randn(num_channels, num_channels, generator=generator, dtype=torch.float64))
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation.float())
        self.register_buffer("sign_s", torch.sign(diagonal).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(num_channels, num_channels), -1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(diagonal.abs()).float())

    def output_shape(self, input_shape):
        return check_channel_count("Invertible1x1Conv", self.num_channels, input_shape)

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.num_channels, device=self.lower.device, dtype=self.lower.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def weight(self) -> Tensor:
        """The mixing matrix ``W = P @ L @ (U + diag(sign_s * exp(log_s)))``, ``[C, C]`` in the parameters' dtype."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_weight(self) -> Tensor:
        """``W^-1 = U^-1 @ L^-1 @ P^T``, ``[C, C]`` in the parameters' dtype.

        Computed in float64 by two triangular solves, which is stabler than inverting `W`.
        """
        lower, upper = (f.double() for f in self._factors())
        eye = torch.eye(self.num_channels, dtype=torch.float64, device=lower.device)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        inverse = torch.linalg.solve_triangular(upper, lower_inv, upper=True) @ self.permutation.double().T
        return inverse.to(self.lower.dtype)

    def _mix(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        check_batch_channels("Invertible1x1Conv", self.num_channels, x)
        # Not under autocast: low-precision factors or mixing would make the inverse inexact and turn the data
        # stream itself into float16/bfloat16 for every later layer. C x C matmuls are cheap in any precision.
        with torch.autocast(x.device.type, enabled=False):
            weight = self.inverse_weight() if inverse else self.weight()
            y = torch.einsum("ij,bj...->bi...", weight.to(x.dtype), x)
        positions = x[0].numel() // self.num_channels if x.shape[0] else 0
        sign = -1.0 if inverse else 1.0
        logdet = (sign * positions * self.log_s.sum()).to(torch.promote_types(x.dtype, torch.float32))
        return y, logdet.expand(x.shape[0])

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._mix(x, inverse=False)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._mix(y, inverse=True)

    def extra_repr(self) -> str:
        return str(self.num_channels)
