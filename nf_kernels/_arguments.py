"""Checking and normalizing the arguments of the coupling ops (SPEC section 1).

Everything a user can get wrong is caught here, before any kernel runs, with the error type the SPEC names.
The result is a :class:`CouplingConfig` plus the tensors, which is all a backend ever sees.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import torch

from ._masks import MaskArg, check_mask, expected_h_shape

SCALES = ("exp", "tanh", "atan", "sigmoid")
# The config's scale for the additive (NICE) coupling: `h` holds only the shift `t` and the log-det is zero.
# Only `additive_coupling` makes such a config; `affine_coupling(scale="none")` is an error.
ADDITIVE = "none"
# float8 and other floating types are not among them: no backend computes in them.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
BACKEND_NAMES = ("auto", "reference", "triton", "cuda", "cpu")



class CouplingConfig(NamedTuple):
    """The scalar part of a coupling call, normalized. Backends receive it unchanged."""

    mask_kind: str  # "half", "checkerboard" or "tensor" (a bool mask passed alongside)
    flip: bool
    scale: str  # one of SCALES, or ADDITIVE
    clamp: float
    shift_first: bool
    reverse: bool

    @property
    def additive(self) -> bool:
        return self.scale == ADDITIVE


def _check_floating(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        supported = ", ".join(str(dtype).removeprefix("torch.") for dtype in SUPPORTED_DTYPES)
        raise TypeError(f"{name} must have a supported floating dtype ({supported}), got {tensor.dtype}")


def check_scale_and_clamp(scale: str, clamp: float) -> None:
    """The scale map of an affine coupling and its clamp (SPEC scale table); shared by the op and the layers."""
    if scale == ADDITIVE:
        raise ValueError(
            f"scale={ADDITIVE!r} is not an affine coupling: valid choices are {', '.join(map(repr, SCALES))}; "
            "for the additive (NICE) coupling use nf_kernels.additive_coupling(x, t)"
        )
    if not isinstance(scale, str) or scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: valid choices are {', '.join(map(repr, SCALES))}")
    if isinstance(clamp, bool) or not isinstance(clamp, numbers.Real):
        raise TypeError(f"clamp must be a real number, got {type(clamp).__name__}")
    # inf would make tanh/atan's clamp * f(s / clamp) inf * 0 = NaN; NaN fails every comparison.
    # Comparisons only (no math.isfinite): under torch.compile(dynamic=True) clamp can be a symbolic float.
    if not 0.0 < clamp < math.inf:
        raise ValueError(f"clamp must be > 0 and finite, got {clamp}")


def check_backend_name(backend: str) -> None:
    if not isinstance(backend, str) or backend not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {backend!r}: valid choices are {', '.join(map(repr, BACKEND_NAMES))}")


def check_coupling_args(
    x: torch.Tensor,
    h: torch.Tensor,
    *,
    mask: MaskArg,
    flip: bool,
    reverse: bool,
    backend: str,
    additive: bool = False,
    scale: Optional[str] = None,
    clamp: float = 1.0,
    shift_first: bool = False,
) -> tuple[Optional[torch.Tensor], CouplingConfig]:
    """Validate one call; return (the bool mask tensor or None, config). Raises per SPEC section 1.

    `additive=True` checks a call of `additive_coupling`: `h` is its `t`, and it has no scale, clamp or shift order.
    """
    h_name = "t" if additive else "h"
    _check_floating("x", x)
    _check_floating(h_name, h)
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension and at least one more, got shape {tuple(x.shape)}")
    if h.device != x.device:
        raise ValueError(f"x is on {x.device} but {h_name} is on {h.device}; put them on one device")
    mask_kind = check_mask(mask, x.shape[1:], x.device)
    mask_tensor = mask if mask_kind == "tensor" else None
    if not additive:
        check_scale_and_clamp(scale, clamp)
    check_backend_name(backend)
    expected = expected_h_shape(x.shape, mask_kind, additive)
    if tuple(h.shape) != expected:
        raise ValueError(
            f"{h_name} has shape {tuple(h.shape)} but x of shape {tuple(x.shape)} with mask={mask_kind!r} "
            f"needs {h_name} of shape {expected}"
        )
    scale = ADDITIVE if additive else scale
    config = CouplingConfig(mask_kind, bool(flip), scale, float(clamp), bool(shift_first), bool(reverse))
    return mask_tensor, config


def logdet_dtype(x_dtype: torch.dtype) -> torch.dtype:
    """float32 for the half types, else the dtype of x (SPEC: outputs)."""
    return torch.float32 if x_dtype in (torch.float16, torch.bfloat16) else x_dtype


def compute_dtype(x_dtype: torch.dtype) -> torch.dtype:
    """Arithmetic and reductions run in float32, or float64 for float64 inputs."""
    return torch.float64 if x_dtype == torch.float64 else torch.float32
