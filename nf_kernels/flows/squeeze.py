"""Squeeze: 2x2 space-to-depth, the reshaping that lets channel-wise couplings see spatial neighbours."""

from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor

from .base import FlowLayer, zero_logdet


def _check_image_shape(shape: Sequence[int], factor: int) -> None:
    if len(shape) != 3:
        raise ValueError(f"Squeeze needs image samples (C, H, W), got sample shape {tuple(shape)}")
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(
            f"Squeeze(factor={factor}) needs height and width divisible by {factor}, got sample shape "
            f"{tuple(shape)}; crop or pad the images, or use fewer scales"
        )


class Squeeze(FlowLayer):
    """Space-to-depth: each ``f x f`` patch of an image becomes ``f * f`` channels, with ``logdet = 0``.

    ``[B, C, H, W] -> [B, C * f * f, H / f, W / f]``, with ``y[:, c * f * f + i * f + j, h, w] =
    x[:, c, h * f + i, w * f + j]`` for ``0 <= i, j < f``.

    Args:
        factor: the patch side ``f`` (int >= 1); default 2.
        input_shape: the image shape ``(C, H, W)`` the layer is for, or None (the default) for any. When given,
            ``H`` and ``W`` not divisible by `factor` are a ValueError at construction rather than at the first call.

    Returns:
        Called as ``layer(x)`` with ``x`` of shape ``[B, C, H, W]``: ``(y, logdet)``, ``y`` of shape
        ``[B, C * f * f, H / f, W / f]`` in ``x``'s dtype, ``logdet`` zeros of shape ``[B]`` (float32 for float16
        and bfloat16 data, else ``x``'s dtype). ``layer.inverse(y)`` maps back.

    Example:
        >>> import torch
        >>> Squeeze()(torch.zeros(1, 3, 4, 6))[0].shape
        torch.Size([1, 12, 2, 3])
    """

    def __init__(self, factor: int = 2, input_shape: Optional[Sequence[int]] = None):
        super().__init__()
        if factor < 1:
            raise ValueError(f"Squeeze factor must be >= 1, got {factor}")
        self.factor = int(factor)
        if input_shape is not None:
            _check_image_shape(input_shape, self.factor)
            self.input_shape = tuple(int(s) for s in input_shape)

    def output_shape(self, input_shape):
        _check_image_shape(input_shape, self.factor)
        channels, height, width = input_shape
        f = self.factor
        return (channels * f * f, height // f, width // f)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        _check_image_shape(x.shape[1:], self.factor)
        b, c, h, w = x.shape
        f = self.factor
        y = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, c * f * f, h // f, w // f), zero_logdet(x)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        f = self.factor
        if y.dim() != 4 or y.shape[1] % (f * f):
            raise ValueError(f"Squeeze.inverse needs [B, C * {f * f}, H, W], got shape {tuple(y.shape)}")
        b, c, h, w = y.shape
        x = y.reshape(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (f * f), h * f, w * f), zero_logdet(y)

    def extra_repr(self) -> str:
        return f"factor={self.factor}" + (f", input_shape={self.input_shape}" if self.input_shape else "")
