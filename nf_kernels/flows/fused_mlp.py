"""The MLP conditioner's fused path: its whole stack of linear layers and ReLUs as one autograd node of the C++
extension (``nf_kernels_ext::mlp``, csrc/ops/mlp.cpp), for plain eager calls.

The node computes what the modules compute, op for op, so outputs and gradients are the same bits; what it saves
is the per-layer work around the products (a module call per layer, an autograd node per addmm, transpose and
ReLU), which in a small flow costs about as much as the products themselves. Wherever that equality or the
modules' behaviour could differ, the modules run instead: under torch.compile, tracing, dispatch modes and
functorch transforms (the same test as the coupling ops' eager path), under forward-mode AD, under autocast (which
casts each layer's inputs), without the extension, when a hook is set on the stack or any layer in it, and for
layouts whose gradients autograd computes in another order (a non-contiguous weight, a column-major input).

One difference remains: the node keeps every layer's weight and bias for its backward (a second derivative reruns
the layers), so autograd refuses a backward after one of them changed in place since the forward, where the
modules refuse it only for the weights they keep.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.autograd import forward_ad

from .. import _ops
from .._build import load

_PLAIN = (Tensor, nn.Parameter)
_mlp_op = torch.ops.nf_kernels_ext.mlp.default if load()[0] is not None else None


def hooked(module: nn.Module) -> bool:
    state = module.__dict__  # the hooks' dicts, read without nn.Module.__getattr__: this runs every call
    return bool(state["_forward_hooks"] or state["_forward_pre_hooks"] or state["_backward_hooks"]
                or state["_backward_pre_hooks"])  # fmt: skip


def _global_hooks() -> bool:
    m = nn.modules.module
    return bool(m._global_forward_hooks or m._global_forward_pre_hooks or m._global_backward_hooks
                or m._global_backward_pre_hooks)  # fmt: skip


def fused_layers(net: nn.Sequential) -> Optional[list[Tensor]]:
    """``[W_1, b_1, ..., W_n, b_n]`` when `net` is still ``Linear, ReLU, ..., Linear`` (every linear layer with a
    bias) with no hooks on it or in it, else None."""
    if hooked(net) or _global_hooks():
        return None
    modules = tuple(net._modules.values())
    if len(modules) % 2 == 0:
        return None
    layers: list[Tensor] = []
    for position, module in enumerate(modules):
        if hooked(module):
            return None
        kind = type(module)
        if position % 2 == 1:
            if kind is not nn.ReLU or module.inplace:
                return None
            continue
        parameters = module._parameters
        weight, bias = parameters.get("weight"), parameters.get("bias")
        # Plain tensors only: a subclass (a DTensor, a quantized or parametrized weight) keeps its own dispatch. And
        # contiguous weights: for another layout (a tied, transposed weight) autograd orders its products otherwise.
        if kind is not nn.Linear or type(weight) not in _PLAIN or type(bias) not in _PLAIN or not weight.is_contiguous():
            return None
        layers += (weight, bias)
    return layers


def may_run_as_node(x: Tensor, width: int) -> bool:
    """Whether a call whose MLP reads `width` features of each row of the 2-D `x` may take a fused node: a plain
    eager call (see the module docstring) without autocast or forward-mode AD, and a row-major `x`. Shared with
    the coupling layer's node (fused_coupling_layer.py)."""
    return (
        _mlp_op is not None
        and x.dim() == 2
        and _ops.runs_eagerly(x, x)
        and not torch.is_autocast_enabled(x.device.type)
        and forward_ad._current_level < 0  # dual tensors: the node has no forward-mode derivative
        and not (x.stride(0) == 1 and width > 1)  # column-major x: autograd orders its products otherwise
    )


def fused_forward(net: nn.Sequential, x: Tensor) -> Optional[Tensor]:
    """`net(x)` through the fused node when this call may take it (see the module docstring), else None."""
    if x.dim() != 2 or not may_run_as_node(x, x.shape[1]):
        return None
    layers = fused_layers(net)
    return None if layers is None else _mlp_op(x, layers)
