"""The functional API of SPEC section 1: `affine_coupling` and `additive_coupling`."""

from __future__ import annotations

import torch

from . import _ops
from ._arguments import check_coupling_args
from ._masks import MaskArg
from ._dispatch import resolve_backend


def affine_coupling(
    x: torch.Tensor,
    h: torch.Tensor,
    *,
    mask: MaskArg = "half",
    flip: bool = False,
    scale: str = "exp",
    clamp: float = 2.0,
    shift_first: bool = False,
    reverse: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """RealNVP affine coupling in one fused pass: returns ``(y, logdet)``.

    Kept elements pass through; transformed ones become ``x * exp(a(s)) + t`` (or ``(x + t) * exp(a(s))`` with
    ``shift_first``), where ``s, t = h.chunk(2, dim=1)`` and ``a`` is the ``scale`` map. ``reverse=True``
    computes the inverse with the same ``h``. ``logdet[b] = +-sum a(s)`` over the transformed elements.
    ``scale`` is one of "exp", "tanh", "atan", "sigmoid"; the additive coupling is :func:`additive_coupling`.

    >>> x = torch.randn(8, 6)
    >>> h = torch.randn(8, 6)          # s and t for the 3 transformed features
    >>> y, logdet = affine_coupling(x, h)
    >>> x_back, minus_logdet = affine_coupling(y, h, reverse=True)
    >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(minus_logdet, -logdet)
    (True, True)
    """
    mask_tensor, config = check_coupling_args(
        x, h, mask=mask, flip=flip, scale=scale, clamp=clamp, shift_first=shift_first, reverse=reverse,
        backend=backend,
    )  # fmt: skip
    return _ops.coupling_op(x, h, mask_tensor, *config, resolve_backend(backend, x.device))


def additive_coupling(
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    mask: MaskArg = "half",
    flip: bool = False,
    reverse: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """NICE additive coupling: transformed elements become ``x + t`` (``x - t`` with ``reverse``); logdet is 0.

    >>> x = torch.randn(4, 5)
    >>> y, logdet = additive_coupling(x, torch.ones(4, 3))   # 5 - 5 // 2 = 3 transformed features
    >>> torch.equal(y[:, 2:], x[:, 2:] + 1), torch.equal(y[:, :2], x[:, :2]), logdet.abs().sum().item()
    (True, True, 0.0)
    """
    mask_tensor, config = check_coupling_args(
        x, t, mask=mask, flip=flip, reverse=reverse, backend=backend, additive=True
    )
    return _ops.coupling_op(x, t, mask_tensor, *config, resolve_backend(backend, x.device))
