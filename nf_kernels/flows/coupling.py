"""Coupling layers: a conditioner reads the kept elements, the fused op transforms the others.

The coupling arithmetic itself is never written here: every call goes to :func:`nf_kernels.affine_coupling`
or :func:`nf_kernels.additive_coupling` with the layer's `backend`. This module only decides what the
conditioner sees (exactly the kept elements, which both directions leave unchanged, so `forward` and `inverse`
compute the same `h`) and checks at construction that the conditioner's output fits the mask.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import _ops, functional
from .._arguments import check_backend_name, check_scale_and_clamp, logdet_dtype
from .._masks import MaskArg, check_mask, expected_h_shape, half_split_channels, kept_elements
from .base import FlowLayer, Shape
from .conditioners import MLP, ResNetConditioner
from .fused_coupling_layer import (backward_from_input_in_one_call, backward_from_output_in_one_call,
                                   forward_as_one_node)
from .memory_saving import GradientSink, forward_recomputing_conditioner


def _check_mask(input_shape: Shape, mask: MaskArg) -> str:
    """The mask kind for samples of `input_shape` (the op's own checks), and what a layer needs beyond them: a
    "half" split with something on each side, so the conditioner has an input."""
    mask_kind = check_mask(mask, input_shape)
    if mask_kind == "half" and input_shape[0] < 2:
        raise ValueError(f"mask='half' splits dim 1 and needs at least 2 channels/features, got sample shape "
                         f"{input_shape}; use mask='checkerboard' for single-channel images")
    return mask_kind


def default_conditioner(
    in_shape: Shape, out_channels: int, hidden: int, depth: int, context_features: Optional[int]
) -> nn.Module:
    """An MLP for vectors, a ResNet-style CNN for images (zero-initialized output either way); `depth` is the
    MLP's hidden-layer count or the CNN's residual-block count."""
    if len(in_shape) == 1:
        return MLP(in_shape[0], out_channels, hidden=hidden, num_hidden_layers=depth, context_features=context_features)
    if len(in_shape) == 3:
        return ResNetConditioner(in_shape[0], out_channels, hidden=hidden, num_blocks=depth,
                                 context_features=context_features)  # fmt: skip
    raise ValueError(f"no default conditioner for samples of shape {in_shape}: pass conditioner=")


class _CouplingLayer(FlowLayer):
    """What the affine and additive couplings share: the mask, the conditioner and its checks (their arguments are
    documented on :class:`AffineCoupling` and :class:`AdditiveCoupling`)."""

    _additive: bool

    def __init__(
        self,
        input_shape: Sequence[int],
        conditioner: Optional[nn.Module] = None,
        *,
        mask: MaskArg = "half",
        flip: bool = False,
        hidden: int = 64,
        depth: int = 2,
        context_features: Optional[int] = None,
        backend: str = "auto",
        recompute_conditioner: bool = False,
    ):
        super().__init__()
        self.recompute_conditioner = bool(recompute_conditioner)
        self.input_shape = tuple(int(s) for s in input_shape)
        if not self.input_shape:
            raise ValueError("a coupling needs samples with at least one dimension")
        check_backend_name(backend)
        self.mask_kind = _check_mask(self.input_shape, mask)
        self.flip, self.backend, self.context_features = bool(flip), backend, context_features
        if self.mask_kind == "half":
            self._kept_channels = half_split_channels(self.input_shape[0], self.flip)[0]
            conditioner_in: Shape = (self.input_shape[0] // 2, *self.input_shape[1:])
        else:
            # The conditioner sees the whole sample with transformed elements zeroed.
            kept_mask = kept_elements(self.input_shape, mask, self.flip).clone()
            self.register_buffer("_kept_mask", kept_mask, persistent=False)
            conditioner_in = self.input_shape
        self.register_buffer("_mask_tensor", mask.clone() if self.mask_kind == "tensor" else None, persistent=False)
        self.h_shape = self._h_shape()
        if conditioner is None:
            conditioner = default_conditioner(conditioner_in, self.h_shape[0], hidden, depth, context_features)
            self._init_default_conditioner(conditioner)
        self.conditioner = conditioner
        self._check_conditioner(conditioner_in)

    # Whether the layer may run with an MLP conditioner as one node (fused_coupling_layer.py), in forward and in the
    # steps of memory-saving backprop and a recomputed conditioner. Only exact AffineCoupling and AdditiveCoupling
    # layers do (_ONE_NODE_LAYERS).
    _one_node = True

    @property
    def _takes_one_node(self) -> bool:
        return self._one_node and type(self) in _ONE_NODE_LAYERS

    def _h_shape(self) -> Shape:
        """The shape of one sample of the conditioner's output, which the op takes."""
        return expected_h_shape(torch.Size((1, *self.input_shape)), self.mask_kind, self._additive)[1:]

    def _init_default_conditioner(self, conditioner: nn.Module) -> None:
        """What the layer's default conditioner needs beyond a zero last layer to start as the identity: nothing."""

    def _check_conditioner(self, conditioner_in: Shape) -> None:
        """One dry run on zeros: a conditioner of the wrong width fails here, naming the shapes."""
        # On the conditioner's own device and dtype, so a conditioner built on a GPU is checked there.
        reference = next(self.conditioner.parameters(), None)
        like = {"device": reference.device, "dtype": reference.dtype} if reference is not None else {}
        probe = torch.zeros((1, *conditioner_in), **like)
        context = torch.zeros(1, self.context_features, **like) if self.context_features else None
        try:
            with torch.no_grad():
                out = self._run_conditioner(probe, context)
        except Exception as error:
            raise ValueError(
                f"{type(self).__name__}: the conditioner failed on its input shape (1, *{conditioner_in}) "
                f"(the kept elements{' and a context' if context is not None else ''}): {error}"
            ) from error
        if tuple(out.shape[1:]) != self.h_shape:
            raise ValueError(
                f"{type(self).__name__}: the conditioner maps samples of shape {conditioner_in} to "
                f"{tuple(out.shape[1:])}, but mask={self.mask_kind!r} on samples of shape {self.input_shape} "
                f"needs {self.h_shape}"
            )

    def _run_conditioner(self, kept: Tensor, context: Optional[Tensor]) -> Tensor:
        # Any nn.Module can be a conditioner; only pass a context to those used with one.
        return self.conditioner(kept) if context is None else self.conditioner(kept, context)

    def _conditioner_input(self, x: Tensor) -> Tensor:
        """What the conditioner reads of `x`: its kept elements, which `x` and the layer's output share."""
        self.check_input(x)
        if self.mask_kind == "half":
            return x[:, self._kept_channels]
        # torch.where, not a product with the mask: an Inf or NaN at a transformed position must not reach h.
        return torch.where(self._kept_mask, x, x.new_zeros(()))

    def _conditioner_output(self, x: Tensor, context: Optional[Tensor]) -> Tensor:
        return self._run_conditioner(self._conditioner_input(x), context)

    @property
    def _mask_arg(self) -> MaskArg:
        return self._mask_tensor if self.mask_kind == "tensor" else self.mask_kind

    def _op_options(self) -> dict[str, Any]:  # pragma: no cover
        """The op's own arguments beyond mask, flip, direction and backend (those of `check_coupling_args`)."""
        raise NotImplementedError

    def _couple(self, x: Tensor, h: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _fused_backward(self, grad_y: Tensor, grad_logdet: Tensor, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """(grad_x, grad_h) of the layer's forward op at input `x`, from the op layer's backward."""
        return functional.coupling_backward(grad_y, grad_logdet, x, h, self._mask_arg, self.flip, self.backend,
                                            **self._op_options())  # fmt: skip

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if self.recompute_conditioner and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return forward_recomputing_conditioner(self, x, context)
        if self._takes_one_node:
            out = forward_as_one_node(self, x, context)
            if out is not None:
                return out
        return self._couple(x, self._conditioner_output(x, context), reverse=False)

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        return self._couple(y, self._conditioner_output(y, context), reverse=True)

    def backward_from_output(
        self, y: Tensor, grad_y: Tensor, grad_logdet: Tensor, sink: GradientSink
    ) -> tuple[Tensor, Tensor]:
        """Memory-saving backward of the stack this layer is in (memory_saving.py): (input, its gradient) from
        (output, its gradient), the parameters' and the context's gradients going to `sink`.

        The kept elements are the same in input and output, so one conditioner forward, on the output, gives the
        `h` that both rebuilds the input (the op's inverse) and feeds the op's fused backward, which runs directly:
        the layer's forward is never recomputed.
        """
        if self._takes_one_node:
            out = backward_from_output_in_one_call(self, y, grad_y, grad_logdet, sink)
            if out is not None:
                return out
        kept, h = self._conditioner_graph(y, sink.context)
        with torch.no_grad():
            x, _ = self._couple(y, h, reverse=True)
        return x, self._backward_through_graph(x, kept, h, grad_y, grad_logdet, sink)

    def backward_from_input(self, x: Tensor, grad_y: Tensor, grad_logdet: Tensor, sink: GradientSink) -> Tensor:
        """The gradient of the layer's input `x` from (output gradient, log-det gradient), recomputing the
        conditioner on `x` (the forward kept nothing else); parameters' and context's gradients go to `sink`."""
        if self._takes_one_node:
            grad_x = backward_from_input_in_one_call(self, x, grad_y, grad_logdet, sink)
            if grad_x is not None:
                return grad_x
        kept, h = self._conditioner_graph(x, sink.context)
        return self._backward_through_graph(x, kept, h, grad_y, grad_logdet, sink)

    def _conditioner_graph(self, x: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        """(kept, h): the conditioner run with autograd on from a fresh leaf `kept` of `x`'s kept elements."""
        kept = self._conditioner_input(x).detach().requires_grad_(True)
        with torch.enable_grad():
            return kept, self._run_conditioner(kept, context)

    def _backward_through_graph(
        self, x: Tensor, kept: Tensor, h: Tensor, grad_y: Tensor, grad_logdet: Tensor, sink: GradientSink
    ) -> Tensor:
        """grad_x of the layer at input `x`: the op's fused backward, then `grad_h` back through the conditioner
        graph `h(kept)` (its parameters' and the context's gradients to `sink`), the kept elements' second path
        added to the op's."""
        context = sink.context
        with_context = context is not None and context.requires_grad
        params = [p for p in self.parameters() if p.requires_grad]
        with torch.no_grad():
            grad_x, grad_h = self._fused_backward(grad_y, grad_logdet.to(logdet_dtype(x.dtype)), x, h)
        if not h.requires_grad:  # a conditioner with nothing to train that ignores its input
            return grad_x
        wrt = [kept, *params] + ([context] if with_context else [])
        grads = torch.autograd.grad(h, wrt, grad_h, allow_unused=True)
        sink.add(params, grads[1 : 1 + len(params)], grads[-1] if with_context else None)
        grad_kept = grads[0]
        # Added in place (the op's outputs are fresh tensors): for "half" into the kept channels alone, instead of
        # a zero-padded copy of the whole sample.
        if grad_kept is not None and self.mask_kind == "half":
            grad_x[:, self._kept_channels].add_(grad_kept)  # add_ on the view: `+=` would copy it back onto itself
        elif grad_kept is not None:
            grad_x.add_(torch.where(self._kept_mask, grad_kept, grad_kept.new_zeros(())))
        return grad_x

    def extra_repr(self) -> str:
        mask = "tensor" if self.mask_kind == "tensor" else repr(self.mask_kind)
        return f"input_shape={self.input_shape}, mask={mask}, flip={self.flip}, backend={self.backend!r}"


class AffineCoupling(_CouplingLayer):
    """RealNVP/Glow affine coupling over samples of `input_shape`, through the fused op.

    The conditioner reads the kept elements, ``h = (s_raw, t) = conditioner(x_kept)``; kept elements pass
    through and, at each transformed element ``k`` (SPEC section 1)::

        y[k] = x[k] * exp(a(s_raw[k])) + t[k]        (shift_first: y[k] = (x[k] + t[k]) * exp(a(s_raw[k])))
        logdet = sum_k a(s_raw[k])

    where ``a`` is the `scale` map. `inverse` undoes it with the same ``h``, since the kept elements are unchanged.

    Args:
        input_shape: one sample's shape, without the batch dim: ``(D,)`` for vectors, ``(C, H, W)`` for images
            (any non-empty shape with your own `conditioner`; ``"half"`` needs ``C >= 2``).
        conditioner: any ``nn.Module`` that maps the kept elements (and the context, when one is given) to
            ``h`` of shape ``[B, 2 * (C - C // 2), *rest]`` for ``"half"``,
            ``[B, 2 * C, *rest]`` otherwise. It gets ``[B, C // 2, *rest]``, the kept half of dim 1, for
            ``mask="half"``, and the whole sample ``[B, *input_shape]`` with the transformed elements zeroed for
            the other masks. Default None: an :class:`MLP` for vectors, a :class:`ResNetConditioner` for images,
            both with a zero output layer (the layer starts as the identity). A dry run at construction checks
            the output shape.
        mask: which elements are kept (SPEC section 1): ``"half"`` (the default; the first ``C // 2`` of dim 1),
            ``"checkerboard"`` (images; where ``(i + j) % 2 == 1``) or a bool tensor of shape `input_shape` (True
            where kept).
        flip: swap the roles of kept and transformed elements (for ``"half"``, the last ``C // 2`` are kept);
            default False. Alternating it between layers transforms every element.
        scale: the map ``a`` from ``s_raw`` to the log-scale: ``"exp"`` (the default; ``a(s) = s``), ``"tanh"``
            (``clamp * tanh(s / clamp)``), ``"atan"`` (``clamp * (2 / pi) * atan(s / clamp)``) or ``"sigmoid"``
            (``log(sigmoid(s + 2))``, Glow's).
        clamp: the bound of the ``"tanh"`` and ``"atan"`` log-scales, a finite float > 0; default 2.0.
        shift_first: shift before scaling, as the original RealNVP and Glow code do; default False.
        hidden: width of the default conditioner (int >= 1); default 64. Not used with `conditioner`.
        depth: hidden layers (MLP) or residual blocks (CNN) of the default conditioner; default 2.
        context_features: width of the context the default conditioner reads (int >= 1), or None (the default)
            for none. When set, every call takes a ``context`` of shape ``[B, context_features]``.
        backend: the fused op's backend for this layer: ``"auto"`` (the default), ``"reference"``, ``"triton"``,
            ``"cuda"`` or ``"cpu"``.
        recompute_conditioner: keep only the layer's input (and context) for backward and rerun the conditioner
            there, instead of keeping its activations and its output ``h``: one conditioner forward more a
            training step; default False. Under ``torch.compile`` the layer takes the standard path.

    Returns:
        Called as ``layer(x, context=None)`` with ``x`` of shape ``[B, *input_shape]``: ``(y, logdet)``, ``y`` of
        ``x``'s shape and dtype, ``logdet`` of shape ``[B]`` (float32 for float16 and bfloat16 data, else ``x``'s
        dtype). ``layer.inverse(y, context=None)`` returns ``(x, -logdet)``.

    Example:
        >>> layer = AffineCoupling((4,), hidden=16, scale="tanh")
        >>> x = torch.randn(3, 4)
        >>> y, logdet = layer(x)          # identity at init: the conditioner's last layer is zero
        >>> torch.equal(y, x), logdet.tolist()
        (True, [0.0, 0.0, 0.0])
    """

    _additive = False

    def __init__(
        self,
        input_shape: Sequence[int],
        conditioner: Optional[nn.Module] = None,
        *,
        scale: str = "exp",
        clamp: float = 2.0,
        shift_first: bool = False,
        **coupling_options: Any,
    ):
        check_scale_and_clamp(scale, clamp)
        self.scale, self.clamp, self.shift_first = scale, float(clamp), bool(shift_first)
        super().__init__(input_shape, conditioner, **coupling_options)

    def _op_options(self) -> dict[str, Any]:
        return dict(scale=self.scale, clamp=self.clamp, shift_first=self.shift_first)

    def _couple(self, x, h, reverse):
        return functional.affine_coupling(
            x, h, mask=self._mask_arg, flip=self.flip, scale=self.scale, clamp=self.clamp,
            shift_first=self.shift_first, reverse=reverse, backend=self.backend,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale!r}, clamp={self.clamp}, shift_first={self.shift_first}"


class AdditiveCoupling(_CouplingLayer):
    """NICE additive coupling over samples of `input_shape`, through the fused op: volume-preserving.

    The conditioner reads the kept elements, ``t = conditioner(x_kept)``; kept elements pass through and, at each
    transformed element ``k``, ``y[k] = x[k] + t[k]`` (SPEC section 1), so ``logdet = 0``.

    Args:
        input_shape: one sample's shape, without the batch dim: ``(D,)`` for vectors, ``(C, H, W)`` for images
            (any non-empty shape with your own `conditioner`; ``"half"`` needs ``C >= 2``).
        conditioner: any ``nn.Module`` that maps the kept elements (and the context, when one is given) to
            ``t`` of shape ``[B, C - C // 2, *rest]`` for ``"half"``,
            ``[B, *input_shape]`` otherwise. It gets ``[B, C // 2, *rest]``, the kept half of dim 1, for
            ``mask="half"``, and the whole sample ``[B, *input_shape]`` with the transformed elements zeroed for
            the other masks. Default None: an :class:`MLP` for vectors, a :class:`ResNetConditioner` for images,
            both with a zero output layer (the layer starts as the identity). A dry run at construction checks
            the output shape.
        mask: which elements are kept (SPEC section 1): ``"half"`` (the default; the first ``C // 2`` of dim 1),
            ``"checkerboard"`` (images; where ``(i + j) % 2 == 1``) or a bool tensor of shape `input_shape` (True
            where kept).
        flip: swap the roles of kept and transformed elements (for ``"half"``, the last ``C // 2`` are kept);
            default False. Alternating it between layers transforms every element.
        hidden: width of the default conditioner (int >= 1); default 64. Not used with `conditioner`.
        depth: hidden layers (MLP) or residual blocks (CNN) of the default conditioner; default 2.
        context_features: width of the context the default conditioner reads (int >= 1), or None (the default)
            for none. When set, every call takes a ``context`` of shape ``[B, context_features]``.
        backend: the fused op's backend for this layer: ``"auto"`` (the default), ``"reference"``, ``"triton"``,
            ``"cuda"`` or ``"cpu"``.
        recompute_conditioner: as for :class:`AffineCoupling`; default False.

    Returns:
        Called as ``layer(x, context=None)`` with ``x`` of shape ``[B, *input_shape]``: ``(y, logdet)``, ``y`` of
        ``x``'s shape and dtype, ``logdet`` zeros of shape ``[B]`` (float32 for float16 and bfloat16 data, else
        ``x``'s dtype). ``layer.inverse(y, context=None)`` returns ``(x, logdet)``.

    Example:
        >>> layer = AdditiveCoupling((1, 4, 4), mask="checkerboard", hidden=8)
        >>> x = torch.randn(2, 1, 4, 4)
        >>> y, logdet = layer(x)
        >>> torch.equal(layer.inverse(y)[0], x), logdet.abs().sum().item()
        (True, 0.0)
    """

    _additive = True

    def _op_options(self) -> dict[str, Any]:
        return dict(additive=True)

    def _couple(self, x, h, reverse):
        return functional.additive_coupling(
            x, h, mask=self._mask_arg, flip=self.flip, reverse=reverse, backend=self.backend
        )


# The layers that take the one node: exact types, since a subclass may override what the node skips (its _couple,
# the conditioner's call).
_ONE_NODE_LAYERS = (AffineCoupling, AdditiveCoupling)
