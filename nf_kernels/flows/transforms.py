"""`FlowTransform`: a flow as a `torch.distributions.Transform`, for `TransformedDistribution` and pyro-style code."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.distributions import Transform, constraints


class FlowTransform(Transform):
    """The latent-to-data map of `flow` (its `inverse`) as a ``torch.distributions.Transform``.

    ::

        T(z) = flow.inverse(z)[0],    T^-1(x) = flow(x)[0],    log|det dT/dz| = -flow(x)[1]

    so ``TransformedDistribution(base, [FlowTransform(flow)])`` has the flow's ``log_prob`` when `base` is the
    flow's base distribution: sampling pushes latents through ``flow.inverse``, and ``log_prob(x)`` pulls ``x``
    back through ``flow.forward``. The event shapes are the flow's latent shape (domain) and sample shape
    (codomain), which differ for multi-scale models (their latent is flat).

    Args:
        flow: the :class:`Flow` to wrap (anything with its ``forward``, ``inverse``, ``sample_shape`` and ``base``).
        context: the conditioning passed to every call of `flow`, fixed for the transform's lifetime: one entry
            per sample, or a single one for all (e.g. a 0-d label); default None (an unconditional flow).
        cache_size: 1 (the default) to remember the last ``(z, x)`` pair, 0 not to, as for every torch Transform.

    Returns:
        A Transform: ``t(z)`` of a latent batch ``[..., *latent_shape]`` is data ``[..., *sample_shape]``,
        ``t.inv(x)`` the way back, ``t.log_abs_det_jacobian(z, x)`` of shape ``[B]``.

    Example:
        >>> from torch.distributions import Independent, Normal, TransformedDistribution
        >>> from nf_kernels.flows import build_model
        >>> flow = build_model("realnvp", (2,), hidden=8)
        >>> base = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
        >>> dist = TransformedDistribution(base, [FlowTransform(flow)])
        >>> x = torch.randn(4, 2)
        >>> torch.allclose(dist.log_prob(x), flow.log_prob(x), atol=1e-5)
        True
    """

    bijective = True

    def __init__(self, flow, context: Optional[Tensor] = None, cache_size: int = 1):
        super().__init__(cache_size=cache_size)
        self.flow, self.context = flow, context
        self.latent_shape = tuple(getattr(flow.base, "shape", flow.sample_shape))
        self.sample_shape = tuple(flow.sample_shape)
        self.domain = constraints.independent(constraints.real, len(self.latent_shape))
        self.codomain = constraints.independent(constraints.real, len(self.sample_shape))

    def __eq__(self, other) -> bool:
        return isinstance(other, FlowTransform) and other.flow is self.flow and other.context is self.context

    def __hash__(self) -> int:
        return hash((id(self.flow), id(self.context)))

    def forward_shape(self, shape) -> torch.Size:
        """The shape `T` maps a latent batch of `shape` to: batch dims stay, the latent event shape becomes the
        data's (multi-scale latents are flat vectors)."""
        return torch.Size(tuple(shape)[: len(shape) - len(self.latent_shape)] + self.sample_shape)

    def inverse_shape(self, shape) -> torch.Size:
        """The shape `T^-1` maps a data batch of `shape` to: batch dims stay, the event shape becomes the latent's."""
        return torch.Size(tuple(shape)[: len(shape) - len(self.sample_shape)] + self.latent_shape)

    def _call(self, z: Tensor) -> Tensor:
        return self.flow.inverse(z, self.context)[0]

    def _inverse(self, x: Tensor) -> Tensor:
        return self.flow(x, self.context)[0]

    def log_abs_det_jacobian(self, z: Tensor, x: Tensor) -> Tensor:
        """``log|det dx/dz|`` per sample, shape ``[B]``: minus the flow's forward log-det at `x` (`z` is unused)."""
        return -self.flow(x, self.context)[1]

    def __repr__(self) -> str:
        return f"FlowTransform(latent_shape={self.latent_shape} -> sample_shape={self.sample_shape})"

    def with_cache(self, cache_size: int = 1) -> "FlowTransform":
        return self if self._cache_size == cache_size else FlowTransform(self.flow, self.context, cache_size)
