"""Multi-scale split (RealNVP, Glow): half the channels go straight to the latent, the rest flow on.

A split is a bijection like any other layer: it factors out the last `C // 2` channels, runs its inner layers on
the first `C - C // 2`, and returns both parts flattened and concatenated, `[B, prod(input_shape)]`. Nesting one
split inside another gives the usual multi-scale architecture, and the model's latent is one flat vector whose
base distribution covers the factored-out parts and the final scale alike. Because the inner layers are a stack of
their own, memory-saving backprop applies inside them too.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from .base import FlowLayer, propagate_shapes
from .flow import forward_layers, inverse_layers
from .memory_saving import GradientSink, backward_through


class MultiScaleSplit(FlowLayer):
    """Multi-scale split: factor the last ``C // 2`` channels out to the latent, run `layers` on the others.

    With ``K = C - C // 2``::

        z = concat(flatten(x[:, K:]), flatten(layers(x[:, :K])))      (shape [B, prod(input_shape)])
        logdet = the summed log-det of `layers`

    Args:
        input_shape: one sample's shape ``(C, ...)`` with ``C >= 2``, e.g. an image's ``(C, H, W)``.
        layers: the flow layers for the kept channels, samples of shape ``(C - C // 2, ...)``
            (:meth:`kept_shape`); default ``()``, which passes them through. Their shapes are checked here.
        memory_saving: run `layers` with memory-saving backprop; default False. A :class:`Flow` sets it on every
            split inside it when its own `memory_saving` is set.

    Returns:
        Called as ``split(x, context=None)`` with ``x`` of shape ``[B, *input_shape]``: ``(z, logdet)``, ``z`` of
        shape ``[B, prod(input_shape)]`` in ``x``'s dtype and ``logdet`` of shape ``[B]``. ``split.inverse(z,
        context=None)`` takes such a ``z`` back to ``(x, -logdet)``. `context` goes to `layers`.

    Example:
        >>> from nf_kernels.flows import Squeeze
        >>> split = MultiScaleSplit((4, 4, 4), [Squeeze()])
        >>> z, logdet = split(torch.randn(2, 4, 4, 4))
        >>> z.shape, split.inner_input_shape, split.inner_output_shape
        (torch.Size([2, 64]), (2, 4, 4), (8, 2, 2))
    """

    def __init__(self, input_shape: Sequence[int], layers: Sequence[nn.Module] = (), memory_saving: bool = False):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) < 1 or self.input_shape[0] < 2:
            raise ValueError(f"MultiScaleSplit needs at least 2 channels to split, got sample shape {self.input_shape}")
        channels = self.input_shape[0]
        self.inner_input_shape = self.kept_shape(self.input_shape)
        self.kept_channels = self.inner_input_shape[0]
        self.factored_shape = (channels // 2, *self.input_shape[1:])
        self.layers = nn.ModuleList(layers)
        self.inner_output_shape = propagate_shapes(self.layers, self.inner_input_shape)
        self.memory_saving = memory_saving

    @staticmethod
    def kept_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
        """The sample shape the inner layers get, the first ``C - C // 2`` channels: ``(C - C // 2, *rest)``.

        Args:
            input_shape: the split's sample shape ``(C, *rest)``.

        Returns:
            The inner layers' sample shape, a tuple of ints.
        """
        channels = int(input_shape[0])
        return (channels - channels // 2, *(int(s) for s in input_shape[1:]))

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        kept, factored = x[:, : self.kept_channels], x[:, self.kept_channels :]
        z_inner, logdet = forward_layers(self.layers, kept, context, self.memory_saving)
        return torch.cat([factored.flatten(1), z_inner.flatten(1)], dim=1), logdet

    def _unflatten(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(factored part, inner layers' output) from the flat latent `z` (or its gradient)."""
        if z.dim() != 2 or z.shape[1] != math.prod(self.input_shape):
            raise ValueError(f"MultiScaleSplit.inverse expects [B, {math.prod(self.input_shape)}], got {tuple(z.shape)}")
        factored_numel = math.prod(self.factored_shape)
        factored = z[:, :factored_numel].reshape(-1, *self.factored_shape)
        return factored, z[:, factored_numel:].reshape(-1, *self.inner_output_shape)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        factored, z_inner = self._unflatten(z)
        kept, logdet = inverse_layers(self.layers, z_inner, context)
        return torch.cat([kept, factored], dim=1), logdet

    def backward_from_output(
        self, z: Tensor, grad_z: Tensor, grad_logdet: Tensor, sink: GradientSink
    ) -> tuple[Tensor, Tensor]:
        """Memory-saving backward of an enclosing stack: (input, its gradient) from (output, its gradient).

        The split itself is slicing and concatenation, so only the inner layers need rebuilding, and they are
        walked directly instead of being rebuilt as a whole and then again one by one.
        """
        factored, z_inner = self._unflatten(z)
        grad_factored, grad_inner = self._unflatten(grad_z)
        kept, grad_kept = backward_through(self.layers, z_inner, grad_inner, grad_logdet, sink)
        return torch.cat([kept, factored], dim=1), torch.cat([grad_kept, grad_factored], dim=1)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, factored_out={self.factored_shape}, memory_saving={self.memory_saving}"
