"""The contenders of an op benchmark, each turning an :class:`OpCase` into a function ``(x, h) -> (y, logdet)``.

* ``eager``: the reference backend's formulas (``nf_kernels.backends.reference.reference_forward``) in eager PyTorch,
  with autograd's backward: what a user who writes the coupling in plain PyTorch gets.
* ``compile``: ``torch.compile`` of that same function. It is compiled directly, not through
  ``nf_kernels.affine_coupling(..., backend="reference")``: the public call goes through a registered custom
  op, which ``torch.compile`` keeps as one opaque node, so it would fuse nothing and measure eager again.
* ``triton``, ``cuda``, ``cpu``: the fused backends through the public functional API, exactly as users call them
  (argument checks and the custom-op dispatch included in the time).

The eager baseline deliberately bypasses the op layer: through it, the reference backend's backward recomputes the
forward, which would make eager look slower than plain PyTorch and flatter every speedup.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import torch

import nf_kernels

from .._dispatch import why_unavailable as backend_unavailable
from ..backends import reference
from .._arguments import CouplingConfig
from .cases import OpCase

CouplingFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

EAGER, COMPILE = "eager", "compile"
FUSED = ("triton", "cuda", "cpu")
PROVIDERS = (EAGER, COMPILE) + FUSED


class Provider:
    """One way to compute the coupling; subclasses say how and where it can run."""

    name: str = ""
    fused = False

    def why_unavailable(self, device: torch.device) -> Optional[str]:
        return None

    def coupling(self, case: OpCase) -> CouplingFn:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class EagerReference(Provider):
    name = EAGER

    def coupling(self, case: OpCase) -> CouplingFn:
        return functools.partial(_reference, config=case.config)


def _reference(x: torch.Tensor, h: torch.Tensor, config: CouplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    return reference.reference_forward(x, h, None, config)  # the benchmarked masks are named, never a bool tensor


class CompiledReference(Provider):
    """``torch.compile(fullgraph=True)`` of the reference, one compiled function per configuration.

    ``dynamic=True`` (the default here) compiles each configuration once for all sizes, which keeps a GPU run
    within its time budget; ``dynamic=False`` specializes every size (slower to compile, and what a user with a
    fixed shape gets).
    """

    name = COMPILE

    def __init__(self, dynamic: bool = True):
        self.dynamic = dynamic
        self._compiled: dict[CouplingConfig, CouplingFn] = {}
        # Every configuration and dtype is a new guard set on the same code object; past dynamo's recompile limit
        # (8 by default) it would silently fall back to eager and this column would measure the wrong thing.
        dynamo_config = torch._dynamo.config
        for limit in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(dynamo_config, limit):
                setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), 4096))

    def coupling(self, case: OpCase) -> CouplingFn:
        config = case.config
        if config not in self._compiled:
            self._compiled[config] = torch.compile(
                functools.partial(_reference, config=config), dynamic=self.dynamic, fullgraph=True
            )
        return self._compiled[config]

    def __repr__(self) -> str:
        return f"CompiledReference(dynamic={self.dynamic})"


class FusedBackend(Provider):
    """A fused backend of nf_kernels, called through the public API."""

    fused = True

    def __init__(self, name: str):
        if name not in FUSED:
            raise ValueError(f"unknown fused backend {name!r}: valid choices are {', '.join(map(repr, FUSED))}")
        self.name = name

    def why_unavailable(self, device: torch.device) -> Optional[str]:
        if self.name == "triton" and device.type == "cpu":
            return "the Triton interpreter checks correctness on the CPU; its times mean nothing"
        return backend_unavailable(self.name, device)

    def coupling(self, case: OpCase) -> CouplingFn:
        config, backend = case.config, self.name
        if case.additive:
            return functools.partial(
                nf_kernels.additive_coupling, mask=case.mask, reverse=config.reverse, backend=backend
            )
        return functools.partial(
            nf_kernels.affine_coupling, mask=case.mask, scale=config.scale, clamp=config.clamp,
            reverse=config.reverse, backend=backend,
        )  # fmt: skip


def make_provider(name: str, *, compile_dynamic: bool = True) -> Provider:
    """The provider called `name` (one of PROVIDERS)."""
    if name == EAGER:
        return EagerReference()
    if name == COMPILE:
        return CompiledReference(dynamic=compile_dynamic)
    if name in FUSED:
        return FusedBackend(name)
    raise ValueError(f"unknown provider {name!r}: valid choices are {', '.join(map(repr, PROVIDERS))}")


def available_providers(device: torch.device, names: Optional[Sequence[str]] = None) -> list[str]:
    """The providers in `names` (default: all) that can run on `device`, in PROVIDERS order.

    >>> available_providers(torch.device("cpu"), ["eager", "compile", "triton"])
    ['eager', 'compile']
    """
    wanted = list(PROVIDERS if names is None else names)
    for name in wanted:
        make_provider(name)  # rejects unknown names with the list of valid ones
    return [name for name in PROVIDERS if name in wanted and make_provider(name).why_unavailable(device) is None]
