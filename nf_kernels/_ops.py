"""The op layer: the registered custom ops, shared by every backend, and the eager shortcut past them.

`nf_kernels::coupling` computes (y, logdet) and `nf_kernels::coupling_backward` its gradient (the spline
coupling's `nf_kernels::spline_coupling` and `nf_kernels::spline_coupling_backward` likewise); they take the
backend's name as an argument and hand the work to it. Fake (meta) implementations and the autograd formula are
registered here once, so eager mode, autograd, `torch.compile(fullgraph=True)` and autocast behave the same for
every backend. This is THE path whenever something traces the call.

A plain eager call (:func:`runs_eagerly`) may skip it: :func:`eager_coupling` hands it to the backend's own
differentiable op when the backend has one (the extension's `nf_kernels_ext::coupling`, whose autograd node is
C++), so one Python call reaches the kernel and backward never enters Python. That op runs the same kernels with
the same arguments as the custom op's backend calls, so both paths give bitwise the same outputs and gradients.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ._arguments import CouplingConfig, logdet_dtype
from ._dispatch import get_backend
from ._prepared import PreparedCall
from ._spline_arguments import SplineConfig


def _is_empty(x: Tensor) -> bool:
    """No sample, or no element in a sample: nothing for a kernel to do (and a zero-size grid is invalid)."""
    return x.shape[0] == 0 or math.prod(x.shape[1:]) == 0


@torch.library.custom_op("nf_kernels::coupling", mutates_args=())
def coupling_op(
    x: Tensor,
    h: Tensor,
    mask: Optional[Tensor],
    mask_kind: str,
    flip: bool,
    scale: str,
    clamp: float,
    shift_first: bool,
    reverse: bool,
    h_layout: str,
    clamp_low: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    if _is_empty(x):
        return torch.empty(x.shape, dtype=x.dtype, device=x.device), x.new_zeros(
            x.shape[0], dtype=logdet_dtype(x.dtype)
        )
    config = CouplingConfig(mask_kind, flip, scale, clamp, shift_first, reverse, h_layout, clamp_low)
    return get_backend(backend).forward(x, h, mask, config)


@coupling_op.register_fake
def _coupling_fake(x, h, mask, mask_kind, flip, scale, clamp, shift_first, reverse, h_layout, clamp_low, backend):
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    logdet = x.new_empty(x.shape[0], dtype=logdet_dtype(x.dtype))
    return y, logdet


@torch.library.custom_op("nf_kernels::coupling_backward", mutates_args=())
def coupling_backward_op(
    grad_y: Tensor,
    grad_logdet: Tensor,
    x: Tensor,
    h: Tensor,
    mask: Optional[Tensor],
    mask_kind: str,
    flip: bool,
    scale: str,
    clamp: float,
    shift_first: bool,
    reverse: bool,
    h_layout: str,
    clamp_low: float,
    backend: str,
) -> tuple[Tensor, Tensor]:
    config = CouplingConfig(mask_kind, flip, scale, clamp, shift_first, reverse, h_layout, clamp_low)
    return _backward(grad_y, grad_logdet, x, h, mask, config, backend)


def _backward(grad_y, grad_logdet, x, h, mask, config: CouplingConfig, backend: str) -> tuple[Tensor, Tensor]:
    """The backend's fused backward, or zeros where there is nothing for a kernel to do (both backward paths)."""
    if _is_empty(x):
        return torch.zeros(x.shape, dtype=x.dtype, device=x.device), torch.zeros(h.shape, dtype=h.dtype, device=h.device)
    return get_backend(backend).backward(grad_y, grad_logdet, x, h, mask, config)


@coupling_backward_op.register_fake
def _coupling_backward_fake(grad_y, grad_logdet, x, h, mask, mask_kind, flip, scale, clamp, shift_first, reverse,
                            h_layout, clamp_low, backend):  # fmt: skip
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), torch.empty(h.shape, dtype=h.dtype, device=h.device)


def _setup_context(ctx, inputs, output):
    x, h, mask, *scalars = inputs
    ctx.save_for_backward(x, h, mask)
    ctx.scalars = scalars


def _autograd_formula(backward_op):
    """The autograd formula of a coupling op whose gradient is `backward_op` (same scalars, after the grads and the
    saved x, h, mask): the missing incoming gradients as zeros, no gradient for the mask and the scalars."""

    def backward(ctx, grad_y: Optional[Tensor], grad_logdet: Optional[Tensor]):
        x, h, mask = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros(x.shape, dtype=x.dtype, device=x.device)
        if grad_logdet is None:
            grad_logdet = torch.zeros(x.shape[0], dtype=logdet_dtype(x.dtype), device=x.device)
        grad_x, grad_h = backward_op(grad_y, grad_logdet, x, h, mask, *ctx.scalars)
        return grad_x, grad_h, None, *([None] * len(ctx.scalars))

    return backward


coupling_op.register_autograd(_autograd_formula(coupling_backward_op), setup_context=_setup_context)


def _no_double_backward(ctx, grad_grad_x, grad_grad_h):
    raise RuntimeError(
        "nf_kernels coupling ops support first-order gradients only; double backward (for example "
        "autograd.grad(..., create_graph=True) followed by another backward) is not implemented"
    )


coupling_backward_op.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)


# Callers pass a CouplingConfig as the ops' scalar arguments (`coupling_op(x, h, mask, *config, backend)`): the
# schema's parameters after `mask` are the config's fields, in order. Checked once here, at import.
_op_parameters = [argument.name for argument in torch.ops.nf_kernels.coupling.default._schema.arguments]
assert _op_parameters[3:-1] == list(CouplingConfig._fields), (_op_parameters, CouplingConfig._fields)


# ---- the spline coupling (SPEC section 1b): the same pattern, its own config ------------------------------------


@torch.library.custom_op("nf_kernels::spline_coupling", mutates_args=())
def spline_coupling_op(
    x: Tensor,
    params: Tensor,
    mask: Optional[Tensor],
    mask_kind: str,
    flip: bool,
    bins: int,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
    reverse: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    if _is_empty(x):
        return torch.empty(x.shape, dtype=x.dtype, device=x.device), x.new_zeros(
            x.shape[0], dtype=logdet_dtype(x.dtype)
        )
    config = SplineConfig(mask_kind, flip, bins, bound, min_bin_width, min_bin_height, min_derivative, reverse)
    return get_backend(backend).spline_forward(x, params, mask, config)


@spline_coupling_op.register_fake
def _spline_coupling_fake(x, params, mask, *scalars):
    return _coupling_fake(x, params, mask, *([None] * 9))


@torch.library.custom_op("nf_kernels::spline_coupling_backward", mutates_args=())
def spline_coupling_backward_op(
    grad_y: Tensor,
    grad_logdet: Tensor,
    x: Tensor,
    params: Tensor,
    mask: Optional[Tensor],
    mask_kind: str,
    flip: bool,
    bins: int,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
    reverse: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    if _is_empty(x):
        return torch.zeros(x.shape, dtype=x.dtype, device=x.device), torch.zeros(
            params.shape, dtype=params.dtype, device=params.device
        )
    config = SplineConfig(mask_kind, flip, bins, bound, min_bin_width, min_bin_height, min_derivative, reverse)
    return get_backend(backend).spline_backward(grad_y, grad_logdet, x, params, mask, config)


@spline_coupling_backward_op.register_fake
def _spline_coupling_backward_fake(grad_y, grad_logdet, x, params, mask, *scalars):
    return _coupling_backward_fake(grad_y, grad_logdet, x, params, mask, *([None] * 9))


# The op saves only its input and params (and the mask): the backward recomputes the rest.
spline_coupling_op.register_autograd(_autograd_formula(spline_coupling_backward_op), setup_context=_setup_context)
spline_coupling_backward_op.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)

_spline_parameters = [argument.name for argument in torch.ops.nf_kernels.spline_coupling.default._schema.arguments]
assert _spline_parameters[3:-1] == list(SplineConfig._fields), (_spline_parameters, SplineConfig._fields)


# Parameters are plain tensors too; any other subclass (fake, functional, a user's) may need the custom op's
# registrations.
_PLAIN_TENSORS = (Tensor, torch.nn.Parameter)


def runs_eagerly(x: Tensor, h: Tensor) -> bool:
    """True for a plain eager call: not traced by torch.compile or export (checked first, so dynamo folds it and
    reads nothing else) nor by torch.jit.trace, plain tensors, no dispatch mode (FakeTensorMode, make_fx, ...)
    and no functorch transform. Only then may a backend's own differentiable op stand in for the custom op."""
    return (
        not torch.compiler.is_compiling()
        and type(x) in _PLAIN_TENSORS
        and type(h) in _PLAIN_TENSORS
        and not torch._C._len_torch_dispatch_stack()
        and not torch._C._are_functorch_transforms_active()
        and torch._C._get_tracing_state() is None
    )


def under_function_transform() -> bool:
    """A torch.func transform (grad, vjp, jvp, jacrev, hessian, vmap, ...) runs this call, outside torch.compile.
    The custom ops' autograd, torch.library's, has no functorch rule: grad, jacrev and jvp refuse it and vmap runs
    it sample by sample. Such a call takes :func:`reference_coupling` instead."""
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def reference_coupling(x: Tensor, h: Tensor, mask: Optional[Tensor], config: CouplingConfig) -> tuple[Tensor, Tensor]:
    """(y, logdet) of a checked call by the reference formulas (the "reference" backend, the oracle every other
    backend is tested against): plain PyTorch ops, which every torch.func transform differentiates and batches.
    Correct to the SPEC's tolerances on any backend, but not fused."""
    return get_backend("reference").forward(x, h, mask, config)


def reference_spline_coupling(x: Tensor, params: Tensor, mask: Optional[Tensor],
                              config: SplineConfig) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The spline coupling's :func:`reference_coupling`."""
    return get_backend("reference").spline_forward(x, params, mask, config)


def eager_coupling_backward(
    grad_y: Tensor, grad_logdet: Tensor, x: Tensor, h: Tensor, mask, prepared: PreparedCall, backend: str
) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_h) of the forward coupling `prepared` describes, for a caller that differentiates by hand
    (memory-saving backprop, a recomputed conditioner) outside any graph and in a plain eager call: the backend's
    backward directly, what the custom op :func:`coupling_backward_op` runs, without its dispatch."""
    config = prepared.config
    return _backward(grad_y, grad_logdet, x, h, mask if config.mask_kind in ("tensor", "compact") else None, config,
                     backend)  # fmt: skip


def eager_coupling(x: Tensor, h: Tensor, mask, prepared: PreparedCall, backend: str) -> tuple[Tensor, Tensor]:
    """A call for which :func:`runs_eagerly` holds, with its checked arguments: the backend's differentiable op
    where it has one (and there is work to do), else the custom op."""
    config = prepared.config
    mask = mask if config.mask_kind in ("tensor", "compact") else None
    run = get_backend(backend).eager_coupling
    if run is None or prepared.empty:
        return coupling_op(x, h, mask, *config, backend)
    return run(x, h, mask, prepared)
