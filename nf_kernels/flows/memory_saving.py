"""Memory-saving backprop: run a stack of invertible layers without keeping their activations.

The standard path keeps every layer's intermediate tensors for backward, so activation memory grows with depth.
Here the whole stack is one autograd node that keeps only the stack's output. In backward it walks the layers
last to first: it rebuilds each layer's input from its output through `inverse`, re-runs that one layer with
autograd on, and back-propagates through it (the log-det's gradient included, since every layer's log-det adds
into the same total). Only one layer's local graph is alive at a time. Parameter gradients come from
`torch.autograd.grad` and are returned as the node's input gradients, so optimizers see nothing unusual.

This is exact up to the rounding of `inverse(forward(x))`: inputs are reconstructed, not stored.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from .base import zero_logdet


def forward_layers(layers: Sequence[nn.Module], x: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Apply `layers` in order, summing their log-dets (the standard, activation-keeping path)."""
    logdet = zero_logdet(x)
    for layer in layers:
        x, layer_logdet = layer(x, context)
        logdet = logdet + layer_logdet
    return x, logdet


def inverse_layers(layers: Sequence[nn.Module], y: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Apply the layers' inverses, last layer first, summing their log-dets."""
    logdet = zero_logdet(y)
    for layer in reversed(layers):
        y, layer_logdet = layer.inverse(y, context)
        logdet = logdet + layer_logdet
    return y, logdet


# Saved-tensor hooks for the one-layer graphs rebuilt during backward (see :func:`hooks_for_recompute`).
_recompute_hooks: Optional[tuple[Callable, Callable]] = None


@contextlib.contextmanager
def hooks_for_recompute(pack: Callable, unpack: Callable) -> Iterator[None]:
    """Apply saved-tensor hooks to the graphs memory-saving backward rebuilds, and only to those.

    Measuring tools use this to see the rebuilt graphs: hooks cannot simply stay on for the whole backward,
    because autograd formulas that use torch.func (as the reference backend's does) refuse to run under them.
    """
    global _recompute_hooks
    previous, _recompute_hooks = _recompute_hooks, (pack, unpack)
    try:
        yield
    finally:
        _recompute_hooks = previous


def _recompute_context():
    if _recompute_hooks is None:
        return contextlib.nullcontext()
    return torch.autograd.graph.saved_tensors_hooks(*_recompute_hooks)


class _InvertibleStack(torch.autograd.Function):
    """Autograd node for a whole stack; inputs are (x, context, *parameters) so all of them get gradients."""

    @staticmethod
    def forward(ctx, layers, x, context, *params):
        y, logdet = forward_layers(layers, x, context)  # autograd is off inside Function.forward
        ctx.layers = layers
        ctx.save_for_backward(y, context)
        ctx.x_dtype = x.dtype
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        y, context = ctx.saved_tensors
        layers = ctx.layers
        context_leaf = None if context is None else context.detach().requires_grad_(ctx.needs_input_grad[2])
        grad_context = None
        param_grads: dict[int, Tensor] = {}
        for layer in reversed(layers):
            with torch.no_grad():
                x, _ = layer.inverse(y, context_leaf)
            x = x.detach().requires_grad_(True)
            params = [p for p in layer.parameters() if p.requires_grad]
            wrt = [x] + params + ([context_leaf] if context_leaf is not None and context_leaf.requires_grad else [])
            with torch.enable_grad(), _recompute_context():
                y_again, logdet = layer(x, context_leaf)
            outputs, grads_out = [y_again], [grad_y]
            if logdet.requires_grad:  # parameter-free layers with a constant log-det have nothing to add
                outputs.append(logdet)
                grads_out.append(grad_logdet.to(logdet.dtype))
            grads = torch.autograd.grad(outputs, wrt, grads_out, allow_unused=True)
            grad_y = grads[0] if grads[0] is not None else torch.zeros_like(x)
            for p, g in zip(params, grads[1 : 1 + len(params)]):
                if g is not None:
                    param_grads[id(p)] = param_grads[id(p)] + g if id(p) in param_grads else g
            if len(wrt) > 1 + len(params) and grads[-1] is not None:
                grad_context = grads[-1] if grad_context is None else grad_context + grads[-1]
            y = x.detach()
            del y_again, logdet, outputs, grads  # drop this layer's graph before rebuilding the next one
        all_params = [p for p in _parameters(layers)]
        return (None, grad_y.to(ctx.x_dtype), grad_context, *[param_grads.get(id(p)) for p in all_params])


def _parameters(layers: Sequence[nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for layer in layers:
        for p in layer.parameters():
            if p.requires_grad:
                seen.setdefault(id(p), p)
    return list(seen.values())


def run_layers(
    layers: Sequence[nn.Module], x: Tensor, context: Optional[Tensor], memory_saving: bool
) -> tuple[Tensor, Tensor]:
    """Forward through `layers`; with `memory_saving`, through one node that stores only the output.

    Falls back to the standard path when there is nothing to differentiate (no_grad, or no input or
    parameter that requires a gradient), where the two are the same computation.
    """
    if not memory_saving or not torch.is_grad_enabled() or len(layers) == 0:
        return forward_layers(layers, x, context)
    params = _parameters(layers)
    needs_grad = x.requires_grad or bool(params) or (context is not None and context.requires_grad)
    if not needs_grad:
        return forward_layers(layers, x, context)
    return _InvertibleStack.apply(layers, x, context, *params)
