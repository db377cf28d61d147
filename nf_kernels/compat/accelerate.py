"""accelerate(model): swap every supported peer-library coupling layer of a model for its fused drop-in, in place.

The convention of Liger-Kernel's apply_liger_kernel_to_*: one call on an existing model, its parameters kept. Here
each supported layer changes class in place (nf_kernels.compat._adopt), so the model, its optimizer and every other
reference to its layers stay valid, and the result says what was replaced and what was left alone, and why.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from torch import nn

from .._arguments import check_backend_name
from ._adopt import Accelerated, Unsupported

# The peer libraries by the top-level package their classes live in, with the compat module for each. A library's
# compat module is imported only when the model has one of its layers.
LIBRARIES = {"normflows": "normflows", "nflows": "nflows", "zuko": "zuko", "FrEIA": "freia", "pyro": "pyro"}
# Why a library's flow layer is left alone when its compat module names no other reason (NOT_FUSED).
NOT_A_COUPLING = "not an affine or additive coupling: nothing to fuse"


@dataclass(frozen=True)
class Replaced:
    path: str  # where in the model ("" for the model itself), as named_modules names it
    library_class: str
    drop_in: str

    def __str__(self) -> str:
        return f"replaced     {self.path or '<model>'}: {self.library_class} -> {self.drop_in}"


@dataclass(frozen=True)
class LeftAlone:
    path: str
    library_class: str
    reason: str

    def __str__(self) -> str:
        return f"left alone   {self.path or '<model>'}: {self.library_class} ({self.reason})"


@dataclass
class AccelerationReport:
    """What :func:`accelerate` did: the layers it replaced, and the peer-library flow layers it left alone with why."""

    replaced: list[Replaced] = field(default_factory=list)
    left_alone: list[LeftAlone] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [*map(str, self.replaced), *map(str, self.left_alone)]
        return "\n".join(lines) if lines else "no layer of a supported library found"


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _compat_module(cls: type):
    """The compat module of the library `cls` belongs to, or None."""
    library = LIBRARIES.get(cls.__module__.split(".")[0])
    return None if library is None else importlib.import_module(f"{__package__}.{library}")


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    """What to walk into: a module's submodules, a list's items, and the transforms of what is not a module (pyro's
    TransformedDistribution, torch's ComposeTransform)."""
    if isinstance(obj, nn.Module):
        yield from obj.named_children()
        return
    if not isinstance(obj, (list, tuple)):
        obj = getattr(obj, "parts", None) or getattr(obj, "transforms", None) or ()
    if isinstance(obj, (list, tuple)):
        yield from ((str(i), part) for i, part in enumerate(obj))


def _walk(obj: Any, path: str, report: AccelerationReport, backend: Optional[str], seen: set) -> bool:
    """Accelerate what can be under `obj`; True if `obj` or something under it is a peer library's flow layer."""
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    if isinstance(obj, Accelerated):  # accelerated before: nothing more to do, and nothing to undo
        report.left_alone.append(LeftAlone(path, _qualified(type(obj)), "already a fused drop-in"))
        return True
    compat = _compat_module(type(obj))
    drop_in = None if compat is None else compat.DROP_INS.get(type(obj))
    if drop_in is not None:
        try:
            drop_in.adopt(obj)
        except Unsupported as why:
            report.left_alone.append(LeftAlone(path, _qualified(drop_in.replaces), str(why)))
            return True
        if backend is not None:
            obj.nf_kernels_backend = backend
        report.replaced.append(Replaced(path, _qualified(drop_in.replaces), _qualified(drop_in)))
        return True  # its children are its own business now
    not_fused = None if compat is None else next((why for cls, why in compat.NOT_FUSED.items() if isinstance(obj, cls)), None)
    if not_fused is not None:  # a coupling the drop-ins do not cover: reported as a whole, not by its parts
        report.left_alone.append(LeftAlone(path, _qualified(type(obj)), not_fused))
        return True
    found = False
    for name, child in _children(obj):
        found |= _walk(child, f"{path}.{name}" if path else name, report, backend, seen)
    if not found and compat is not None and isinstance(obj, compat.FLOW_BASE):
        report.left_alone.append(LeftAlone(path, _qualified(type(obj)), NOT_A_COUPLING))
        return True
    return found


def accelerate(model: Any, backend: Optional[str] = None) -> AccelerationReport:
    """Replace, in place, every supported coupling layer of a normflows, nflows, zuko, FrEIA or pyro model by its
    fused drop-in (nf_kernels.compat.<library>), keeping its parameters; return what was replaced and what not.

    Args:
        model: an ``nn.Module`` (a flow, a layer, a ModuleList), a pyro ``TransformedDistribution`` or a list of
            transforms. Its layers keep their identity: optimizers and other references stay valid.
        backend: the fused ops' backend for the replaced layers (default None: each keeps its own, "auto").

    Returns:
        An :class:`AccelerationReport`: ``replaced`` (path, library class, drop-in class) and ``left_alone`` (path,
        class, reason) for every flow layer of those libraries that was not replaced. It prints as a table.

    >>> import torch, normflows as nf
    >>> flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(4), [
    ...     nf.flows.AffineCouplingBlock(nf.nets.MLP([2, 16, 4])), nf.flows.Permute(4, mode="swap")])
    >>> print(accelerate(flow))
    replaced     flows.0: normflows.flows.affine.coupling.AffineCouplingBlock -> nf_kernels.compat.normflows.AffineCouplingBlock
    left alone   flows.1: normflows.flows.mixing.Permute (not an affine or additive coupling: nothing to fuse)
    """
    if backend is not None:
        check_backend_name(backend)
    report = AccelerationReport()
    _walk(model, "", report, backend, set())
    return report
