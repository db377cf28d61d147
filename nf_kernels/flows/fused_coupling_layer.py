"""An affine or additive coupling layer and its MLP conditioner as one autograd node of the C++ extension
(``nf_kernels_ext::mlp_coupling``, csrc/ops/mlp_coupling.cpp), for plain eager calls on vectors with the "half" mask.

As two nodes, the conditioner's gradient reaches the kept features through a slice's backward: a zero tensor the
size of ``x``, the gradient copied into it, and a sum with the coupling's gradient into a third tensor. The one node
adds it in place into the kept half of the coupling kernel's ``grad_x``, and its forward runs the MLP and the
kernel without Python between them. Outputs and gradients are the two nodes' bit for bit (the same products, the
same kernels; test_fused_coupling_layer.py).

The layer takes the node exactly when both of its halves would take theirs: the conditioner would run as the MLP's
fused node (fused_mlp.py: eager, no hooks, plain layers) and the coupling as the extension's own differentiable op
(a "cpu" or "cuda" backend, a call with elements to transform). Otherwise, and with a context, the layer runs its
conditioner and its op one after the other, as before.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .._dispatch import get_backend, resolve_backend
from .._prepared import MAX_ENTRIES, PreparedCall, prepare_call
from .conditioners import MLP
from .fused_mlp import fused_layers, hooked, may_run_as_node


class _Plan(NamedTuple):
    run: object  # the backend's eager_mlp_coupling
    prepared: PreparedCall


# (layer options, x's shape, dtype and device, h's width) -> _Plan, or None where the node cannot run. What
# prepare_call checks depends on nothing else, so a hit is known to pass its checks.
_plans: dict = {}


def _plan(layer, x: Tensor, h_width: int) -> Optional[_Plan]:
    options = layer._op_options()
    key = (layer.flip, layer.backend, tuple(options.items()), x.shape, x.dtype, x.device, h_width)
    try:
        return _plans[key]
    except KeyError:
        pass
    # The one call of this combination that is checked in full, on an h of the conditioner's output shape.
    h = x.new_empty((x.shape[0], h_width))
    prepared = prepare_call(x, h, "half", layer.flip, options.get("scale"), options.get("clamp", 1.0),
                            options.get("shift_first", False), False, layer.backend, options.get("additive", False),
                            "scale_shift")  # fmt: skip
    run = getattr(get_backend(resolve_backend(layer.backend, x.device, prepared.config)), "eager_mlp_coupling", None)
    plan = None if run is None or prepared.empty else _Plan(run, prepared)
    if len(_plans) >= MAX_ENTRIES:
        _plans.clear()
    _plans[key] = plan
    return plan


def forward_as_one_node(layer, x: Tensor, context: Optional[Tensor]) -> Optional[tuple[Tensor, Tensor]]:
    """``layer(x, context)`` (an AffineCoupling or AdditiveCoupling) through the one node when this call may take it
    (see the module docstring), else None."""
    if context is not None or layer.mask_kind != "half" or x.dim() != 2:
        return None
    conditioner = layer.conditioner
    if type(conditioner) is not MLP or not conditioner.fused or conditioner.context_features is not None:
        return None
    kept = layer._kept_channels
    if hooked(conditioner) or not may_run_as_node(x, kept.stop - kept.start):
        return None
    layers = fused_layers(conditioner.net)
    # Parameters of another dtype or device fail in the conditioner's first product: the modules raise that error.
    if layers is None or any(p.dtype != x.dtype or p.device != x.device for p in layers):
        return None
    layer.check_input(x)
    plan = _plan(layer, x, layers[-2].shape[0])
    if plan is None:
        return None
    return plan.run(x, layers, kept.start, kept.stop - kept.start, plan.prepared)


def clear() -> None:
    """Forget every plan (tests)."""
    _plans.clear()
