"""Choosing a backend (SPEC section 2): which ones exist, which can run here, and what "auto" means.

Backends are imported lazily, so a missing Triton or an unbuilt C++ extension costs nothing until asked for,
and each unavailable backend says why (as xformers' dispatcher does), instead of failing somewhere deeper.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from typing import Optional

import torch

from ._arguments import BACKEND_NAMES, CouplingConfig, check_backend_name

# name -> (module, attribute) of the object implementing nf_kernels.backends.base.Backend
_LOCATIONS = {
    "reference": ("nf_kernels.backends.reference", "BACKEND"),
    "triton": ("nf_kernels.backends.triton_kernels", "BACKEND"),
    "cpu": ("nf_kernels.backends.extension", "CPU_BACKEND"),
    "cuda": ("nf_kernels.backends.extension", "CUDA_BACKEND"),
}

# What "auto" tries, fastest first, per device type. On CUDA the order comes from the side-by-side op
# benchmarks (benchmarks/results); until a GPU run decides otherwise, Triton goes first.
AUTO_ORDER = {
    "cuda": ("triton", "cuda", "reference"),
    "cpu": ("cpu", "reference"),
}

ENV_VAR = "NF_KERNELS_BACKEND"


@functools.lru_cache(maxsize=None)
def _load(name: str):
    """(backend object, None) or (None, why it could not be imported)."""
    module_name, attribute = _LOCATIONS[name]
    try:
        return getattr(importlib.import_module(module_name), attribute), None
    except Exception as error:  # an ImportError, or an extension that fails to load: report, don't crash
        return None, f"{module_name} could not be loaded: {type(error).__name__}: {error}"


def why_unavailable(name: str, device: torch.device) -> Optional[str]:
    backend, error = _load(name)
    if backend is None:
        return error
    return backend.why_unavailable(device)


def why_unsupported(name: str, scale: str, h_layout: str, mask_kind: str) -> Optional[str]:
    """None if backend `name` computes calls with these features (a loaded backend's own answer), else why not.
    The one place that says which backend supports what: "auto" and explicit requests both ask it."""
    backend, _ = _load(name)
    return None if backend is None else backend.why_unsupported(scale, h_layout, mask_kind)


# The features of a spline coupling call, in place of an affine call's (scale, h_layout, mask kind): ("spline",
# bins). A backend supports splines by having their methods (backends/base.py), all masks included, and may limit
# the bins (its optional `spline_why_unsupported(bins)`).
SPLINE = "spline"


def why_spline_unsupported(name: str, bins: Optional[int] = None) -> Optional[str]:
    """None if backend `name` computes spline couplings (it has `spline_forward`) of `bins` bins (None: any it
    has kernels for), else why not."""
    backend, _ = _load(name)
    if backend is None:
        return None
    if getattr(backend, "spline_forward", None) is None:
        return f"backend {name!r} does not support spline couplings yet"
    limit = getattr(backend, "spline_why_unsupported", None)
    return None if bins is None or limit is None else limit(bins)


def _why_not_supported(name: str, features: tuple) -> Optional[str]:
    if features[0] == SPLINE:
        return why_spline_unsupported(name, features[1])
    return why_unsupported(name, *features)


def get_backend(name: str):
    """The backend object for a concrete name (never "auto"); RuntimeError if it cannot be loaded."""
    backend, error = _load(name)
    if backend is None:
        raise RuntimeError(f"backend {name!r} is unavailable: {error}")
    return backend


def _one_of(names: list[str]) -> str:
    quoted = list(map(repr, names))
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


@functools.lru_cache(maxsize=None)
def _resolve(requested: str, env_choice: Optional[str], device_type: str, features: tuple[str, ...]) -> str:
    device = torch.device(device_type)
    if requested == "auto" and env_choice:
        if env_choice not in BACKEND_NAMES:
            raise ValueError(
                f"{ENV_VAR}={env_choice!r} is not a backend: valid choices are {', '.join(map(repr, BACKEND_NAMES))}"
            )
        requested = env_choice
    # What would work is said here, from what can run and compute the call, and only here: backends' reasons say
    # why not.
    preferred = AUTO_ORDER.get(device_type, ("reference",))
    working = [n for n in _LOCATIONS if why_unavailable(n, device) is None and _why_not_supported(n, features) is None]
    working.sort(key=lambda n: preferred.index(n) if n in preferred else len(preferred))
    if requested == "auto":
        return next((name for name in preferred if name in working), "reference")
    reason = why_unavailable(requested, device)
    if reason is not None:
        raise RuntimeError(
            f"backend {requested!r} cannot run on {device_type}: {reason}. "
            f"On {device_type} use backend={_one_of(working)} (or 'auto')"
        )
    reason = _why_not_supported(requested, features)
    if reason is not None:
        raise NotImplementedError(f"{reason}; use backend={_one_of(working)} (or 'auto')")
    return requested


def resolve_backend(requested: str, device: torch.device, config: Optional[CouplingConfig] = None) -> str:
    """The concrete backend name for a call; raises the SPEC's errors for unknown or unusable backends, and for a
    backend that does not support the call's scale map, h layout or mask kind (`config`; None: the defaults)."""
    check_backend_name(requested)
    features = ("exp", "scale_shift", "half") if config is None else (config.scale, config.h_layout, config.mask_kind)
    return _resolve_constant(requested, device.type, *features)


# Under torch.compile the choice is a constant of the traced graph: dynamo does not trace the imports behind it.
# Every call is a cached lookup; the environment is read only where it matters, for "auto".
@torch.compiler.assume_constant_result
def _resolve_constant(requested: str, device_type: str, scale: str, h_layout: str, mask_kind: str) -> str:
    env_choice = (os.environ.get(ENV_VAR) or None) if requested == "auto" else None
    return _resolve(requested, env_choice, device_type, (scale, h_layout, mask_kind))


def resolve_spline_backend(requested: str, device: torch.device, bins: int = 8) -> str:
    """:func:`resolve_backend` for a spline coupling call of `bins` bins: "auto" takes the first backend of its
    order that has the spline methods and kernels for that many bins; an explicit one without them is the SPEC's
    NotImplementedError."""
    check_backend_name(requested)
    return _resolve_spline_constant(requested, device.type, bins)


@torch.compiler.assume_constant_result
def _resolve_spline_constant(requested: str, device_type: str, bins: int) -> str:
    env_choice = (os.environ.get(ENV_VAR) or None) if requested == "auto" else None
    return _resolve(requested, env_choice, device_type, (SPLINE, bins))


@dataclass(frozen=True)
class BackendStatus:
    name: str
    device: str
    available: bool
    reason: Optional[str]

    def __str__(self) -> str:
        return f"{self.name:<10} {self.device:<5} " + ("available" if self.available else f"unavailable: {self.reason}")


class BackendReport(list):
    """A list of BackendStatus that prints as a table."""

    def __str__(self) -> str:
        return "\n".join(str(status) for status in self)

    __repr__ = __str__


def list_backends() -> BackendReport:
    """Every backend on every device type this machine has, with the reason where it cannot run.

    Returns:
        A list of ``BackendStatus(name, device, available, reason)``, one per backend and device type ("cpu", and
        "cuda" when torch sees a GPU), that prints as a table. ``reason`` is None where the backend runs, else a
        sentence saying why not and what would.

    >>> print(nf_kernels.list_backends())  # doctest: +SKIP
    reference  cpu   available
    triton     cpu   unavailable: Triton compiles for GPUs; ...
    """
    device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    report = BackendReport()
    for device_type in device_types:
        for name in _LOCATIONS:
            reason = why_unavailable(name, torch.device(device_type))
            report.append(BackendStatus(name, device_type, reason is None, reason))
    return report
