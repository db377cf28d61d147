"""Checking and normalizing the arguments of the coupling ops (SPEC section 1).

Everything a user can get wrong is caught here, before any kernel runs, with the error type the SPEC names.
The result is a :class:`CouplingConfig` plus the tensors, which is all a backend ever sees.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import torch

from ._masks import MaskArg, check_mask, could_be_compact, expected_h_shape

# The scale maps, in the order of their kernel codes (nf_kernels/_layout.py). The first four are nf_kernels' own; the
# rest reproduce a peer library's map exactly (docs/spec.md's scale table names which and says why each exists).
SCALES = (
    "exp", "tanh", "atan", "sigmoid",
    "rsigmoid", "nflows_sigmoid", "softclamp", "clip", "freia_atan", "freia_tanh", "freia_sigmoid",
)  # fmt: skip
# The peer maps' fixed constants: nflows' floor on its scale, exp(a) = sigmoid(s + 2) + 1e-3
# (nflows/transforms/coupling.py), and FrEIA's factor of its "ATAN" clamp (0.636, not 2 / pi:
# FrEIA/modules/coupling_layers.py). Fixed by those libraries, so fixed here.
NFLOWS_SCALE_FLOOR = 1e-3
FREIA_ATAN_FACTOR = 0.636
# The one map with two constants: `clamp=(low, high)` (or one float c for (-c, c)), pyro's log-scale clip.
TWO_SIDED_SCALES = ("clip",)
# How h holds s_raw and t along dim 1 (SPEC section 1): the two halves in either order, or (t, s_raw) pairs of
# channels. The kernels' form of each (offsets) is nf_kernels/_layout.py's H_LAYOUT_OFFSETS.
H_LAYOUTS = ("scale_shift", "shift_scale", "shift_scale_pairs")
# The config's scale for the additive (NICE) coupling: `h` holds only the shift `t` and the log-det is zero.
# Only `additive_coupling` makes such a config; `affine_coupling(scale="none")` is an error.
ADDITIVE = "none"
# float8 and other floating types are not among them: no backend computes in them.
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
BACKEND_NAMES = ("auto", "reference", "triton", "cuda", "cpu")



class CouplingConfig(NamedTuple):
    """The scalar part of a coupling call, normalized. Backends receive it unchanged."""

    mask_kind: str  # "half", "checkerboard", "tensor" (a bool mask passed alongside) or "compact" (a bool mask,
    # with h holding only the transformed elements)
    flip: bool
    scale: str  # one of SCALES, or ADDITIVE
    clamp: float  # the map's bound; the upper one of a two-sided map
    shift_first: bool
    reverse: bool
    h_layout: str = "scale_shift"  # one of H_LAYOUTS
    clamp_low: float = 0.0  # the lower bound of a two-sided map (TWO_SIDED_SCALES), unused by the others

    @property
    def additive(self) -> bool:
        return self.scale == ADDITIVE


def _check_floating(name: str, tensor: torch.Tensor) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        supported = ", ".join(str(dtype).removeprefix("torch.") for dtype in SUPPORTED_DTYPES)
        raise TypeError(f"{name} must have a supported floating dtype ({supported}), got {tensor.dtype}")


def check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return value


def check_input_tensors(x: torch.Tensor, other: torch.Tensor, other_name: str) -> None:
    """`x` and the conditioner output `other` (named `other_name` in errors): supported floating tensors on one
    device, `x` with a batch dimension and at least one more. Shared by every coupling op's checks."""
    _check_floating("x", x)
    _check_floating(other_name, other)
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension and at least one more, got shape {tuple(x.shape)}")
    if other.device != x.device:
        raise ValueError(f"x is on {x.device} but {other_name} is on {other.device}; put them on one device")


def check_scale_and_clamp(scale: str, clamp) -> tuple[float, float]:
    """The scale map of an affine coupling and its clamp (SPEC scale table); shared by the op and the layers.

    Returns the config's (clamp, clamp_low): for a two-sided map (high, low), else (clamp, 0.0)."""
    if scale == ADDITIVE:
        raise ValueError(
            f"scale={ADDITIVE!r} is not an affine coupling: valid choices are {', '.join(map(repr, SCALES))}; "
            "for the additive (NICE) coupling use nf_kernels.additive_coupling(x, t)"
        )
    if not isinstance(scale, str) or scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}: valid choices are {', '.join(map(repr, SCALES))}")
    if scale in TWO_SIDED_SCALES:
        if isinstance(clamp, (tuple, list)):
            if len(clamp) != 2:
                raise ValueError(f"scale={scale!r} takes clamp=(low, high), got {len(clamp)} values")
            low, high = (check_real("clamp", bound) for bound in clamp)
        else:
            high = check_real("clamp", clamp)
            low = -high
        # Comparisons only (no math.isfinite): under torch.compile(dynamic=True) a bound can be a symbolic float.
        if not -math.inf < low < high < math.inf:
            raise ValueError(f"scale={scale!r} needs finite bounds low < high (clamp=(low, high), or c > 0 for "
                             f"(-c, c)), got low={low}, high={high}")  # fmt: skip
        return float(high), float(low)
    if isinstance(clamp, (tuple, list)):
        raise TypeError(f"clamp=(low, high) is for scale={TWO_SIDED_SCALES[0]!r} only; scale={scale!r} takes one "
                        "real number")  # fmt: skip
    check_real("clamp", clamp)
    # inf would make tanh/atan's clamp * f(s / clamp) inf * 0 = NaN; NaN fails every comparison.
    # Comparisons only (no math.isfinite): under torch.compile(dynamic=True) clamp can be a symbolic float.
    if not 0.0 < clamp < math.inf:
        raise ValueError(f"clamp must be > 0 and finite, got {clamp}")
    return float(clamp), 0.0


def check_h_layout(h_layout: str) -> None:
    if not isinstance(h_layout, str) or h_layout not in H_LAYOUTS:
        raise ValueError(f"unknown h_layout {h_layout!r}: valid choices are {', '.join(map(repr, H_LAYOUTS))}")


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
    h_layout: str = "scale_shift",
) -> tuple[Optional[torch.Tensor], CouplingConfig]:
    """Validate one call; return (the bool mask tensor or None, config). Raises per SPEC section 1.

    `additive=True` checks a call of `additive_coupling`: `h` is its `t`, and it has no scale, clamp, shift order
    or layout.
    """
    h_name = "t" if additive else "h"
    check_input_tensors(x, h, h_name)
    mask_kind = check_mask(mask, x.shape[1:], x.device)
    mask_tensor = mask if mask_kind == "tensor" else None
    clamp_low = 0.0
    if not additive:
        clamp, clamp_low = check_scale_and_clamp(scale, clamp)
        check_h_layout(h_layout)
    check_backend_name(backend)
    expected = expected_h_shape(x.shape, mask_kind, additive)
    if tuple(h.shape) != expected:
        if mask_kind == "tensor" and could_be_compact(x.shape, h.shape, additive):
            mask_kind = "compact"  # its element count is checked against the mask inside the op (no host sync here)
        else:
            compact = " (or, compact, [B, 2K, ...] holding only the transformed elements)" if mask_kind == "tensor" else ""
            raise ValueError(
                f"{h_name} has shape {tuple(h.shape)} but x of shape {tuple(x.shape)} with mask={mask_kind!r} "
                f"needs {h_name} of shape {expected}{compact}"
            )
    scale = ADDITIVE if additive else scale
    config = CouplingConfig(mask_kind, bool(flip), scale, float(clamp), bool(shift_first), bool(reverse),
                            "scale_shift" if additive else h_layout, float(clamp_low))  # fmt: skip
    return mask_tensor, config


def logdet_dtype(x_dtype: torch.dtype) -> torch.dtype:
    """float32 for the half types, else the dtype of x (SPEC: outputs)."""
    return torch.float32 if x_dtype in (torch.float16, torch.bfloat16) else x_dtype


def compute_dtype(x_dtype: torch.dtype) -> torch.dtype:
    """Arithmetic and reductions run in float32, or float64 for float64 inputs."""
    return torch.float64 if x_dtype == torch.float64 else torch.float32
