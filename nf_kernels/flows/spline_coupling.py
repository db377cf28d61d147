"""The rational-quadratic spline coupling layer (neural spline flows), through the fused spline op.

What the conditioner sees, the checks at construction and the memory-saving backward are the affine coupling's
(`coupling._CouplingLayer`); this module adds the spline's parameters and what its default conditioner needs to
start as the identity.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import _ops, functional
from .._dispatch import resolve_spline_backend
from .._masks import expected_params_shape
from .._spline_arguments import check_spline_args, check_spline_scalars, spline_params_per_element
from .base import Shape
from .coupling import _CouplingLayer


def identity_derivative_parameter(min_derivative: float) -> float:
    """The unconstrained derivative whose map ``min_derivative + softplus`` gives 1: with it, and zero widths and
    heights (equal bins), the spline is the identity."""
    return math.log(math.expm1(1.0 - min_derivative))


def _output_layer(conditioner: nn.Module) -> nn.Module:
    """The last (zero-initialized) layer of a default conditioner (flows/conditioners.py)."""
    return conditioner.net[-1] if hasattr(conditioner, "net") else conditioner.head[-1]


class SplineCoupling(_CouplingLayer):
    """Rational-quadratic spline coupling (Durkan et al. 2019) over samples of `input_shape`, through the fused op.

    The conditioner reads the kept elements, ``params = conditioner(x_kept)``; kept elements pass through and each
    transformed element goes through its own monotonic spline of `bins` bins on ``[-bound, bound]`` (the identity
    outside), made from its ``P = 3 * bins - 1`` unconstrained parameters as nflows does (SPEC section 1b).
    `inverse` undoes it with the same ``params``, since the kept elements are unchanged.

    Args:
        input_shape: one sample's shape, without the batch dim: ``(D,)`` for vectors, ``(C, H, W)`` for images.
        conditioner: any ``nn.Module`` that maps the kept elements (and the context, when one is given) to
            ``params`` of shape ``[B, (C - C // 2) * P, *rest]`` for ``"half"``, ``[B, C * P, *rest]`` otherwise
            (channel ``c``'s parameter ``j`` at index ``c * P + j``: widths, heights, derivatives). It gets what an
            :class:`AffineCoupling`'s conditioner gets. Default None: an :class:`MLP` for vectors, a
            :class:`ResNetConditioner` for images, with a zero output layer whose bias makes every interior
            derivative 1, so the layer starts as the identity (to rounding). A dry run checks the output shape.
        bins: bins of each spline (int >= 1); default 8.
        bound: the splines' interval ``[-bound, bound]`` (finite, > 0); default 3.0.
        min_bin_width: the smallest bin width, a fraction of the interval (``>= 0``, times `bins` below 1);
            default 1e-3 (nflows').
        min_bin_height: the same for the heights; default 1e-3.
        min_derivative: the smallest derivative at an interior knot (> 0); default 1e-3.
        mask, flip, hidden, depth, context_features, backend, recompute_conditioner: as for :class:`AffineCoupling`.

    Returns:
        Called as ``layer(x, context=None)``: ``(y, logdet)``; ``layer.inverse(y, context=None)`` returns
        ``(x, -logdet)``.

    Example:
        >>> layer = SplineCoupling((4,), hidden=16, bins=4)
        >>> x = torch.randn(3, 4)
        >>> y, logdet = layer(x)          # identity at init
        >>> torch.allclose(y, x, atol=1e-6), logdet.abs().max().item() < 1e-6
        (True, True)
    """

    _additive = False

    def __init__(
        self,
        input_shape: Sequence[int],
        conditioner: Optional[nn.Module] = None,
        *,
        bins: int = 8,
        bound: float = 3.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        **coupling_options: Any,
    ):
        (self.bins, self.bound, self.min_bin_width, self.min_bin_height,
         self.min_derivative) = check_spline_scalars(bins, bound, min_bin_width, min_bin_height, min_derivative)  # fmt: skip
        super().__init__(input_shape, conditioner, **coupling_options)

    @property
    def params_per_element(self) -> int:
        return spline_params_per_element(self.bins)

    def _h_shape(self) -> Shape:
        return expected_params_shape(torch.Size((1, *self.input_shape)), self.mask_kind, self.params_per_element)[1:]

    def _init_default_conditioner(self, conditioner: nn.Module) -> None:
        # Zero widths and heights give equal bins (slope 1); the derivative entries' bias makes every knot's
        # derivative 1 too, so the spline starts as the identity.
        bias = _output_layer(conditioner).bias
        with torch.no_grad():
            per_element = bias.view(-1, self.params_per_element)
            per_element[:, 2 * self.bins :] = identity_derivative_parameter(self.min_derivative)

    def _op_options(self) -> dict[str, Any]:
        return dict(bins=self.bins, bound=self.bound, min_bin_width=self.min_bin_width,
                    min_bin_height=self.min_bin_height, min_derivative=self.min_derivative)  # fmt: skip

    def _couple(self, x: Tensor, h: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        return functional.spline_coupling(x, h, mask=self._mask_arg, flip=self.flip, reverse=reverse,
                                          backend=self.backend, **self._op_options())  # fmt: skip

    def _fused_backward(self, grad_y: Tensor, grad_logdet: Tensor, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        mask, config = check_spline_args(x, h, mask=self._mask_arg, flip=self.flip, reverse=False,
                                         backend=self.backend, **self._op_options())  # fmt: skip
        backend = resolve_spline_backend(self.backend, x.device, self.bins)
        return _ops.spline_coupling_backward_op(grad_y, grad_logdet, x, h, mask, *config, backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bins={self.bins}, bound={self.bound}"
