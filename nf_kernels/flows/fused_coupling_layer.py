"""An affine or additive coupling layer and its MLP conditioner as one call of the C++ extension, for plain eager
calls on vectors with the "half" mask: ``nf_kernels_ext::mlp_coupling`` (one autograd node) in forward and
``nf_kernels_ext::mlp_coupling_rebuilt_backward`` in the steps of memory-saving backprop and of a recomputed
conditioner (csrc/ops/mlp_coupling.cpp).

As two nodes, the conditioner's gradient reaches the kept features through a slice's backward: a zero tensor the
size of ``x``, the gradient copied into it, and a sum with the coupling's gradient into a third tensor. The one node
adds it in place into the kept half of the coupling kernel's ``grad_x``, and its forward runs the MLP and the
kernel without Python between them. The rebuilt backward's step through a coupling (coupling.py,
``backward_from_output`` and ``backward_from_input``) rebuilds the conditioner's graph, calls
``torch.autograd.grad`` on it and sums the gradients in Python; in one call it is the same products and kernels with
none of that. Outputs and gradients are
the Python steps' bit for bit (the same products, the same kernels; test_fused_coupling_layer.py).

A layer takes the one call exactly when both of its halves would take their own: the conditioner would run as the
MLP's fused node (fused_mlp.py: eager, no hooks, plain layers, no autocast) and the coupling as the extension's own
op (a "cpu" or "cuda" backend, a call with elements to transform). Otherwise, and with a context, the layer runs
its conditioner and its op one after the other, as before.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from .._arguments import logdet_dtype
from .._dispatch import get_backend, resolve_backend
from .._prepared import PreparedCall, prepare_call
from .conditioners import MLP
from .fused_mlp import fused_layers, hooked, may_run_as_node


def _plan(layer, x: Tensor, h_width: int, reverse: bool = False) -> Optional[tuple[Any, PreparedCall]]:
    """(the backend object, the PreparedCall) of the layer's coupling on `x`, or None where the call cannot take the
    one node: a backend without it, nothing to transform, or options the checks reject (the layer's own path then
    raises its error). prepare_call remembers the checked call per combination, keyed on h's shape, dtype and
    device, which an empty h of the conditioner's output shape gives; the backend is resolved on every call (a
    cached lookup), since NF_KERNELS_BACKEND may change between calls."""
    options = layer._op_options()
    try:
        prepared = prepare_call(x, x.new_empty((x.shape[0], h_width)), "half", layer.flip, options.get("scale"),
                                options.get("clamp", 1.0), options.get("shift_first", False), reverse, layer.backend,
                                options.get("additive", False), "scale_shift")  # fmt: skip
        backend = get_backend(resolve_backend(layer.backend, x.device, prepared.config))
    except (TypeError, ValueError, RuntimeError):
        return None
    if getattr(backend, "eager_mlp_coupling", None) is None or prepared.empty:
        return None
    return backend, prepared


def _layers(layer, x: Tensor, context: Optional[Tensor]) -> Optional[list[Tensor]]:
    """The conditioner's ``[W_1, b_1, ...]`` when a call of `layer` on `x` may be one call (the module docstring),
    else None. `x` is checked as the layer checks its input."""
    if context is not None or layer.mask_kind != "half" or x.dim() != 2:
        return None
    conditioner = layer.conditioner
    if type(conditioner) is not MLP or not conditioner.fused or conditioner.context_features is not None:
        return None
    if "forward" in conditioner.__dict__:  # a forward set on the instance: the layer calls it
        return None
    # The conditioner's parameters are the layer's (memory-saving backprop's step gives gradients to those alone).
    if layer._parameters or layer._modules.keys() != {"conditioner"}:
        return None
    kept = layer._kept_channels
    if hooked(conditioner) or not may_run_as_node(x, kept.stop - kept.start):
        return None
    layers = fused_layers(conditioner.net)
    if layers is None:
        return None
    # A conditioner whose layers do not chain (a replaced layer): its own node raises the error. (Parameters of
    # another dtype or device need no test: the conditioner's first product raises the same error either way.)
    width = kept.stop - kept.start
    for weight in layers[::2]:
        if weight.dim() != 2 or weight.shape[1] != width:
            return None
        width = weight.shape[0]
    layer.check_input(x)
    return layers


def forward_as_one_node(layer, x: Tensor, context: Optional[Tensor]) -> Optional[tuple[Tensor, Tensor]]:
    """``layer(x, context)`` (an AffineCoupling or AdditiveCoupling) through the one node when this call may take it,
    else None."""
    layers = _layers(layer, x, context)
    plan = None if layers is None else _plan(layer, x, layers[-2].shape[0])
    if plan is None:
        return None
    backend, prepared = plan
    kept = layer._kept_channels
    return backend.eager_mlp_coupling(x, layers, kept.start, kept.stop - kept.start, prepared)


def backward_from_output_in_one_call(layer, y: Tensor, grad_y: Tensor, grad_logdet: Tensor,
                                     sink) -> Optional[tuple[Tensor, Tensor]]:  # fmt: skip
    """The layer's memory-saving step, ``layer.backward_from_output(y, grad_y, grad_logdet, sink)``, in one call
    when it may take it, else None: ``(x, grad_x)``, the parameters' gradients added to `sink`."""
    return _rebuilt_backward(layer, y, grad_y, grad_logdet, sink, from_output=True)


def backward_from_input_in_one_call(layer, x: Tensor, grad_y: Tensor, grad_logdet: Tensor, sink) -> Optional[Tensor]:
    """A recomputed conditioner's step, ``layer.backward_from_input(x, grad_y, grad_logdet, sink)``, in one call
    when it may take it, else None: ``grad_x``, the parameters' gradients added to `sink`."""
    out = _rebuilt_backward(layer, x, grad_y, grad_logdet, sink, from_output=False)
    return None if out is None else out[1]


def _rebuilt_backward(layer, input: Tensor, grad_y: Tensor, grad_logdet: Tensor, sink,
                      from_output: bool) -> Optional[tuple[Tensor, Tensor]]:  # fmt: skip
    """(x, grad_x) of the layer from its output (`from_output`) or its input, through
    ``nf_kernels_ext::mlp_coupling_rebuilt_backward``; None where the call cannot take it."""
    layers = _layers(layer, input, sink.context)
    if layers is None or grad_y.shape != input.shape or grad_y.dtype != input.dtype or grad_y.device != input.device:
        return None
    h_width = layers[-2].shape[0]
    forward = _plan(layer, input, h_width)
    inverse = _plan(layer, input, h_width, reverse=True) if from_output else None
    if forward is None or (from_output and inverse is None):
        return None
    backend, prepared = forward
    kept = layer._kept_channels
    needs = [p.requires_grad for p in layers]
    x, grad_x, grads = backend.eager_mlp_coupling_rebuilt_backward(
        input, grad_y, grad_logdet.to(logdet_dtype(input.dtype)), layers, needs, kept.start, kept.stop - kept.start,
        prepared, None if inverse is None else inverse[1],
    )  # fmt: skip
    sink.add([p for p, need in zip(layers, needs) if need], grads, None)
    return x, grad_x
