"""Memory-saving backprop: run a stack of invertible layers without keeping their activations.

The standard path keeps every layer's intermediate tensors for backward, so activation memory grows with depth.
Here the whole stack is one autograd node that keeps only the stack's output. In backward it walks the layers
last to first: it rebuilds each layer's input from its output through `inverse`, re-runs that one layer with
autograd on, and back-propagates through it (the log-det's gradient included, since every layer's log-det adds
into the same total). Only one layer's local graph is alive at a time. Parameter gradients come from
`torch.autograd.grad` and are returned as the node's input gradients, so optimizers see nothing unusual.

A layer can do its own step of that walk, `backward_from_output(y, grad_y, grad_logdet, sink) -> (x, grad_x)`:
a multi-scale split walks its inner stack directly, and a coupling needs a single conditioner forward (its kept
elements are the same in input and output), feeding both its inverse and the fused op's backward, where rebuilding
and re-running the layer would take two (coupling.py).

This is exact up to the rounding of `inverse(forward(x))`: inputs are reconstructed, not stored.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .. import _ops


class GradientSink:
    """Collects what the rebuilt graphs give to the parameters and to the context, summed over layers."""

    def __init__(self, context: Optional[Tensor]):
        self.context = context  # a detached leaf, requiring grad when the caller needs its gradient
        self.context_grad: Optional[Tensor] = None
        self.param_grads: dict[int, Tensor] = {}

    def add(self, params: Sequence[Tensor], grads: Sequence[Optional[Tensor]], context_grad: Optional[Tensor]):
        for p, g in zip(params, grads):
            if g is not None:
                self.param_grads[id(p)] = self.param_grads[id(p)] + g if id(p) in self.param_grads else g
        if context_grad is not None:
            self.context_grad = context_grad if self.context_grad is None else self.context_grad + context_grad


def _recompute_layer_backward(
    layer: nn.Module, y: Tensor, grad_y: Tensor, grad_logdet: Tensor, sink: GradientSink
) -> tuple[Tensor, Tensor]:
    """Rebuild `layer`'s input from its output `y`, re-run the layer, back-propagate: (input, grad of input)."""
    context = sink.context
    with torch.no_grad():
        x, _ = layer.inverse(y, context)
    x = x.detach().requires_grad_(True)
    params = [p for p in layer.parameters() if p.requires_grad]
    with_context = context is not None and context.requires_grad
    with torch.enable_grad():
        y_again, logdet = layer(x, context)
    outputs, grads_out = [y_again], [grad_y]
    if logdet.requires_grad:  # parameter-free layers with a constant log-det have nothing to add
        outputs.append(logdet)
        grads_out.append(grad_logdet.to(logdet.dtype))
    wrt = [x, *params] + ([context] if with_context else [])
    grads = torch.autograd.grad(outputs, wrt, grads_out, allow_unused=True)
    sink.add(params, grads[1 : 1 + len(params)], grads[-1] if with_context else None)
    grad_x = grads[0] if grads[0] is not None else torch.zeros_like(x)
    return x.detach(), grad_x


def backward_through(
    layers: Sequence[nn.Module], y: Tensor, grad_y: Tensor, grad_logdet: Tensor, sink: GradientSink
) -> tuple[Tensor, Tensor]:
    """Walk `layers` last to first from the stack's output `y`: returns (the stack's input, its gradient).

    A layer that holds a stack of its own (a multi-scale split) provides `backward_from_output` with the same
    meaning, so its inner layers are rebuilt once, here, rather than once per enclosing stack.
    """
    for layer in reversed(layers):
        backward_from_output = getattr(layer, "backward_from_output", None)
        if backward_from_output is not None:
            y, grad_y = backward_from_output(y, grad_y, grad_logdet, sink)
        else:
            y, grad_y = _recompute_layer_backward(layer, y, grad_y, grad_logdet, sink)
    return y, grad_y


# The standard path, `forward_layers(layers, x, context) -> (y, logdet)`, which flow.py owns (and imports this
# module, so it is passed in rather than imported).
StandardForward = Callable[[Sequence[nn.Module], Tensor, Optional[Tensor]], tuple[Tensor, Tensor]]


class _InvertibleStack(torch.autograd.Function):
    """Autograd node for a whole stack; its tensor inputs are (x, context, *parameters): all of them get gradients."""

    @staticmethod
    def forward(ctx, standard_forward, layers, x, context, *params):
        y, logdet = standard_forward(layers, x, context)  # autograd is off inside Function.forward
        ctx.layers, ctx.params = layers, params
        ctx.autocast = _autocast_state(x.device.type)
        ctx.save_for_backward(y, context)
        ctx.x_dtype = x.dtype
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        y, context = ctx.saved_tensors

        def walk(sink: GradientSink) -> Tensor:
            return backward_through(ctx.layers, y, grad_y, grad_logdet, sink)[1]

        grad_x, context_grad, param_grads = _replay(ctx, context, ctx.needs_input_grad[3], walk)
        return (None, None, grad_x.to(ctx.x_dtype), context_grad, *param_grads)


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    """The forward's autocast settings: backward runs outside autocast, and the graphs it rebuilds must see the
    precision the forward pass had."""
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def _replay(ctx, context: Optional[Tensor], context_needs_grad: bool,
            walk: Callable[[GradientSink], Tensor]) -> tuple[Tensor, Optional[Tensor], list[Optional[Tensor]]]:  # fmt: skip
    """What a recomputing node's backward returns: `walk(sink)` (the input's gradient) run under the forward's
    autocast settings (`ctx.autocast`), the context's gradient and those of `ctx.params`, from the sink."""
    context_leaf = None if context is None else context.detach().requires_grad_(context_needs_grad)
    sink = GradientSink(context_leaf)
    device_type, enabled, dtype = ctx.autocast
    with torch.autocast(device_type, dtype=dtype, enabled=enabled):
        grad_x = walk(sink)
    return grad_x, sink.context_grad, [sink.param_grads.get(id(p)) for p in ctx.params]


def _trainable(params) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]


def _needs_grad(x: Tensor, context: Optional[Tensor], params: Sequence[Tensor]) -> bool:
    """Whether a recomputing node has anything to differentiate: the input, a parameter or the context."""
    return x.requires_grad or bool(params) or (context is not None and context.requires_grad)


def _parameters(layers: Sequence[nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for layer in layers:
        for p in layer.parameters():
            if p.requires_grad:
                seen.setdefault(id(p), p)
    return list(seen.values())


def forward_keeping_no_activations(
    standard_forward: StandardForward, layers: Sequence[nn.Module], x: Tensor, context: Optional[Tensor]
) -> tuple[Tensor, Tensor]:
    """`standard_forward(layers, x, context)` as one autograd node that stores only the stack's output.

    Runs `standard_forward` itself when there is nothing to differentiate (no_grad, or no input or parameter
    that requires a gradient): the two are then the same computation. Under a torch.func transform too, which
    differentiates the standard path itself (a Python autograd.Function without setup_context runs in none).
    """
    if not torch.is_grad_enabled() or len(layers) == 0 or _ops.under_function_transform():
        return standard_forward(layers, x, context)
    params = _parameters(layers)
    if not _needs_grad(x, context, params):
        return standard_forward(layers, x, context)
    return _InvertibleStack.apply(standard_forward, layers, x, context, *params)


class _ConditionerRecomputed(torch.autograd.Function):
    """Autograd node for one coupling that keeps only its input (and context): the conditioner's activations and
    its output `h`, the largest tensor of a spline coupling ((3K - 1) values a transformed element), are not kept
    but recomputed from the input in backward. Tensor inputs are (x, context, *parameters)."""

    @staticmethod
    def forward(ctx, layer, x, context, *params):
        h = layer._conditioner_output(x, context)  # autograd is off inside Function.forward
        y, logdet = layer._couple(x, h, reverse=False)
        ctx.layer, ctx.params = layer, params
        ctx.autocast = _autocast_state(x.device.type)
        # The parameters too (they are alive anyway): autograd then refuses a backward after they changed in place,
        # as the standard path's saved weights do, instead of rerunning the conditioner with the new values.
        ctx.save_for_backward(x, context, *params)
        return y, logdet

    @staticmethod
    @once_differentiable  # first-order gradients only, as the fused ops: a double backward is refused, not wrong
    def backward(ctx, grad_y, grad_logdet):
        x, context = ctx.saved_tensors[:2]

        def walk(sink: GradientSink) -> Tensor:
            return ctx.layer.backward_from_input(x, grad_y, grad_logdet, sink)

        grad_x, context_grad, param_grads = _replay(ctx, context, ctx.needs_input_grad[2], walk)
        return (None, grad_x.to(x.dtype), context_grad, *param_grads)


def forward_recomputing_conditioner(layer: nn.Module, x: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """`layer(x, context)` of a coupling layer (coupling.py) as one autograd node that keeps only `x` and the
    context; backward reruns the conditioner on `x` (one conditioner forward more than the standard path) and
    calls `layer.backward_from_input`. The standard path itself when nothing needs a gradient, and under tracing,
    dispatch modes and functorch transforms (a Python autograd.Function runs in none of them)."""
    params = _trainable(layer.parameters())
    if not _needs_grad(x, context, params) or not _ops.runs_eagerly(x, x):
        return layer._couple(x, layer._conditioner_output(x, context), reverse=False)
    return _ConditionerRecomputed.apply(layer, x, context, *params)
