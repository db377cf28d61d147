"""From discrete pixels to densities and back: uniform dequantization and bits per dimension (SPEC section 5)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def dequantize(
    x_int: Tensor,
    levels: int = 256,
    generator: Optional[torch.Generator] = None,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """Uniform dequantization: integer levels to continuous values in ``[0, 1)``.

    ::

        x = (x_int + u) / levels,    u ~ U[0, 1) elementwise

    A continuous density fitted to these values lower-bounds the discrete model's log-likelihood, once
    corrected by ``-D * log(levels)`` (see :func:`bits_per_dim`). Values are kept strictly below 1, also where
    float32 rounding of ``(levels - 1 + u) / levels`` would give 1.

    Args:
        x_int: the levels, any shape: an integer tensor, or a floating one holding integers, with values in
            ``[0, levels - 1]``.
        levels: how many levels there are (int >= 2); default 256 (8-bit images).
        generator: the random generator that draws ``u``; default None (torch's global one). Not used with `noise`.
        noise: ``u`` itself instead of drawing it: a floating tensor of `x_int`'s shape with values in
            ``[0, 1)``; default None. That lets a caller decide which generator makes the noise, e.g. so that a
            resumed or a distributed run sees exactly the noise of an uninterrupted single-process run (see
            :class:`nf_kernels.training.BatchStream`).

    Returns:
        ``x`` of `x_int`'s shape and device, in `noise`'s dtype when it is given, else `x_int`'s floating dtype or
        torch's default dtype (float32 unless changed) for integer levels.

    Example:
        >>> x = dequantize(torch.tensor([[0, 255]]), 256)
        >>> bool((x >= 0).all() and (x < 1).all())
        True
        >>> dequantize(torch.tensor([0, 16]), 17, noise=torch.tensor([0.5, 0.5]))
        tensor([0.0294, 0.9706])
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    if x_int.dtype.is_floating_point:
        if not torch.equal(x_int, x_int.round()):
            raise ValueError("dequantize expects integer levels (an integer tensor, or floats holding integers)")
    if x_int.numel() and (x_int.min() < 0 or x_int.max() >= levels):
        raise ValueError(f"values must lie in [0, {levels - 1}], got [{x_int.min().item()}, {x_int.max().item()}]")
    if noise is None:
        dtype = x_int.dtype if x_int.dtype.is_floating_point else torch.get_default_dtype()
        noise = torch.rand(x_int.shape, generator=generator, dtype=dtype, device=x_int.device)
    elif not noise.dtype.is_floating_point or noise.shape != x_int.shape:
        raise ValueError(f"noise must be a floating-point tensor of the shape of x_int {tuple(x_int.shape)}, "
                         f"got {noise.dtype} {tuple(noise.shape)}")  # fmt: skip
    dtype = noise.dtype
    # float32 rounding could turn (levels - 1 + u) / levels into exactly 1.0: keep the promised [0, 1).
    return ((x_int.to(dtype) + noise) / levels).clamp_max(1 - torch.finfo(dtype).eps)


def bits_per_dim(log_prob: Tensor, num_dims: int, levels: int = 256) -> Tensor:
    """Bits per dimension of data dequantized from `levels` levels into ``[0, 1)`` (SPEC section 5).

    ::

        bits_per_dim = -(log_prob - D * log(levels)) / (D * log(2))

    The ``D * log(levels)`` term turns the density of the ``[0, 1)`` values back into one on the discrete levels'
    scale, so the result is the discrete model's cost in bits (an upper bound, by dequantization).

    Args:
        log_prob: the natural-log density of each dequantized sample, e.g. ``flow.log_prob(x)``: any shape,
            typically ``[B]``, floating point.
        num_dims: ``D``, the number of dimensions of one sample, e.g. ``C * H * W`` (int >= 1).
        levels: the number of levels the data were dequantized from; default 256.

    Returns:
        The bits per dimension, of `log_prob`'s shape and dtype.

    Example:
        >>> bits_per_dim(torch.tensor([0.0]), num_dims=3)   # a uniform density on [0, 1)^3 costs 8 bits a dim
        tensor([8.])
    """
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    return -(log_prob - num_dims * math.log(levels)) / (num_dims * math.log(2.0))
