"""What every backend provides. The op layer (`nf_kernels._ops`) is the only caller."""

from __future__ import annotations

from typing import Callable, Optional, Protocol

import torch

from .._arguments import CouplingConfig


class Backend(Protocol):
    """A way to compute the coupling op and its gradient.

    Backends receive validated arguments (see `nf_kernels._arguments`) with at least one sample and one element
    per sample; they return fresh contiguous outputs with the SPEC's dtypes.
    """

    name: str
    # For plain eager calls (nf_kernels._ops.eager_coupling), a differentiable op with autograd of its own that
    # stands in for the custom op: (x, h, bool mask or None, PreparedCall) -> (y, logdet). None: the custom op.
    eager_coupling: Optional[Callable[..., tuple[torch.Tensor, torch.Tensor]]]
    # For plain eager calls of a coupling layer with an MLP conditioner on a vector's kept half
    # (nf_kernels/flows/fused_coupling_layer.py), the layer as one differentiable op: (x, [W_1, b_1, ...], kept_start,
    # kept_count, PreparedCall) -> (y, logdet). None: the conditioner and the op run one after the other.
    eager_mlp_coupling: Optional[Callable[..., tuple[torch.Tensor, torch.Tensor]]]

    def why_unavailable(self, device: torch.device) -> Optional[str]:
        """None if this backend can run on `device`, else a sentence saying why not (the dispatcher says what works)."""
        ...

    def why_unsupported(self, scale: str, h_layout: str, mask_kind: str) -> Optional[str]:
        """None if this backend computes calls with this scale map, h layout and mask kind (of a CouplingConfig),
        else a sentence saying what it lacks (the dispatcher, the one caller, says what does support it)."""
        ...

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, mask: Optional[torch.Tensor], config: CouplingConfig
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, logdet) of the coupling; `h` is the shift `t` alone when `config.additive`."""
        ...

    def backward(
        self,
        grad_y: torch.Tensor,
        grad_logdet: torch.Tensor,
        x: torch.Tensor,
        h: torch.Tensor,
        mask: Optional[torch.Tensor],
        config: CouplingConfig,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(grad_x, grad_h): gradients of the forward's inputs, `grad_h` zero at kept positions."""
        ...

    # Optional: the spline coupling (SPEC section 1b). A backend without these methods does not support splines
    # (the dispatcher says so, and "auto" passes it over).
    #
    # def spline_forward(self, x, params, mask, config: SplineConfig) -> (y, logdet)
    # def spline_backward(self, grad_y, grad_logdet, x, params, mask, config: SplineConfig) -> (grad_x, grad_params)
    # def spline_why_unsupported(self, bins: int) -> Optional[str]   (optional: None, or why not that many bins)
    #
    # `x` is the op's input (y when config.reverse); grad_params is zero at kept positions.
