"""Checking and normalizing the arguments of the spline coupling op (SPEC section 1b).

The tensors, the mask and the backend name follow the affine op's rules (`_arguments`, `_masks`); what is new is the
spline's own scalars, checked here into a :class:`SplineConfig`, which is all a backend sees besides the tensors.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import torch

from ._arguments import check_backend_name, check_input_tensors, check_real
from ._masks import MaskArg, check_mask, expected_params_shape


class SplineConfig(NamedTuple):
    """The scalar part of a spline coupling call, normalized. Backends receive it unchanged."""

    mask_kind: str  # "half", "checkerboard" or "tensor" (a bool mask passed alongside)
    flip: bool
    bins: int  # K
    bound: float  # B: the spline maps [-B, B] onto itself, identity outside
    min_bin_width: float
    min_bin_height: float
    min_derivative: float
    reverse: bool

    @property
    def params_per_element(self) -> int:
        return spline_params_per_element(self.bins)


def spline_params_per_element(bins: int) -> int:
    """P = 3K - 1: K widths, K heights, K - 1 interior derivatives (nflows' convention, SPEC section 1b)."""
    return 3 * bins - 1


def _check_bins(bins) -> int:
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral):
        raise TypeError(f"bins must be an int, got {type(bins).__name__}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return int(bins)


def _check_minimum(name: str, value, bins: int) -> float:
    """A minimal bin width or height: >= 0 and small enough that `bins` of them leave room (value * bins < 1)."""
    check_real(name, value)
    # Comparisons only (no math.isfinite): under torch.compile(dynamic=True) a float can be symbolic.
    if not 0.0 <= value * bins < 1.0:
        raise ValueError(f"{name} must be >= 0 with {name} * bins < 1, got {name}={value} for bins={bins}")
    return float(value)


def check_spline_scalars(bins, bound, min_bin_width, min_bin_height, min_derivative) -> tuple[int, float, float, float, float]:
    """The spline's own scalars, normalized; TypeError or ValueError naming the argument (SPEC error table).
    Shared by the op and the layers."""
    bins = _check_bins(bins)
    check_real("bound", bound)
    if not 0.0 < bound < math.inf:
        raise ValueError(f"bound must be > 0 and finite, got {bound}")
    min_bin_width = _check_minimum("min_bin_width", min_bin_width, bins)
    min_bin_height = _check_minimum("min_bin_height", min_bin_height, bins)
    check_real("min_derivative", min_derivative)
    if not 0.0 < min_derivative < math.inf:
        raise ValueError(f"min_derivative must be > 0 and finite, got {min_derivative}")
    return bins, float(bound), min_bin_width, min_bin_height, float(min_derivative)


def check_spline_args(
    x: torch.Tensor,
    params: torch.Tensor,
    *,
    mask: MaskArg,
    flip: bool,
    bins: int,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
    reverse: bool,
    backend: str,
) -> tuple[Optional[torch.Tensor], SplineConfig]:
    """Validate one call; return (the bool mask tensor or None, config). Raises per SPEC section 1b."""
    check_input_tensors(x, params, "params")
    mask_kind = check_mask(mask, x.shape[1:], x.device)
    scalars = check_spline_scalars(bins, bound, min_bin_width, min_bin_height, min_derivative)
    check_backend_name(backend)
    per_element = spline_params_per_element(scalars[0])
    expected = expected_params_shape(x.shape, mask_kind, per_element)
    if tuple(params.shape) != expected:
        raise ValueError(
            f"params has shape {tuple(params.shape)} but x of shape {tuple(x.shape)} with mask={mask_kind!r} and "
            f"bins={scalars[0]} needs params of shape {expected} ({per_element} = 3 * bins - 1 parameters for each "
            "element along dim 1)"
        )
    config = SplineConfig(mask_kind, bool(flip), *scalars, bool(reverse))
    return (mask if mask_kind == "tensor" else None), config
