"""Default conditioners: the networks that compute a coupling's scale and shift from the kept elements.

Both zero-initialize their last layer, so the coupling they feed starts as the identity map (RealNVP, Glow).
Both accept an optional per-sample context vector (`context_features` wide), e.g. an embedded class label.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .fused_mlp import fused_forward


def _zero_init(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _check_sizes(owner: str, *, at_least_one: dict[str, Optional[int]], at_least_zero: dict[str, int]) -> None:
    """ValueError naming every size of `owner` that is too small (None means "not used" and passes)."""
    bad = {k: v for k, v in at_least_one.items() if v is not None and v < 1}
    bad.update({k: v for k, v in at_least_zero.items() if v < 0})
    if bad:
        raise ValueError(f"{owner} sizes out of range: {', '.join(f'{k}={v}' for k, v in bad.items())} "
                         f"({', '.join(at_least_one)} must be >= 1; {', '.join(at_least_zero) or 'none'} >= 0)")


def _check_context(module: nn.Module, context: Optional[Tensor], batch: int) -> None:
    if module.context_features is None:
        if context is not None:
            raise ValueError(f"{type(module).__name__} was built without context_features but got a context")
        return
    if context is None:
        raise ValueError(f"{type(module).__name__} was built with context_features={module.context_features}; "
                         "pass a context tensor of shape [B, context_features]")
    if context.shape != (batch, module.context_features):
        raise ValueError(f"context must have shape {(batch, module.context_features)}, got {tuple(context.shape)}")


class MLP(nn.Module):
    """A fully connected conditioner for vector data: ``[B, in_features] -> [B, out_features]``.

    ``num_hidden_layers`` times (linear, ReLU), then a linear output layer that starts at zero, so the coupling it
    feeds starts as the identity. A context, when there is one, is concatenated to the input.

    In a plain eager call with the C++ extension built, the layers run as one autograd node
    (``nf_kernels_ext::mlp``): the same outputs and gradients, bit for bit, without a module call and autograd
    nodes per layer. Under torch.compile, tracing, autocast, forward-mode AD or functorch transforms, or with a hook
    on `net` or a layer in it, the modules run one by one (nf_kernels/flows/fused_mlp.py).

    Args:
        in_features: width of the input, the kept elements (int >= 1).
        out_features: width of the output, the coupling's ``h`` (int >= 1).
        hidden: width of the hidden layers (int >= 1); default 64.
        num_hidden_layers: how many hidden layers (int >= 1); default 2.
        context_features: width of the per-sample context (int >= 1), or None (the default) for no context.
        fused: take the fused node where it applies (the default, True); False always runs the modules one by one.

    Returns:
        Called as ``net(x, context=None)`` with ``x`` of shape ``[B, in_features]`` (and ``context`` of shape
        ``[B, context_features]`` exactly when `context_features` is set): ``h`` of shape ``[B, out_features]``.

    Example:
        >>> net = MLP(3, 8, hidden=16)
        >>> net(torch.randn(5, 3)).abs().max().item()    # zero-initialized output layer
        0.0
    """

    fused = True  # the default for MLPs pickled before the attribute existed

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 64,
        num_hidden_layers: int = 2,
        context_features: Optional[int] = None,
        fused: bool = True,
    ):
        super().__init__()
        self.fused = bool(fused)
        _check_sizes("MLP", at_least_zero={}, at_least_one=dict(
            in_features=in_features, out_features=out_features, hidden=hidden, num_hidden_layers=num_hidden_layers,
            context_features=context_features))  # fmt: skip
        self.in_features, self.out_features, self.context_features = in_features, out_features, context_features
        layers: list[nn.Module] = []
        width = in_features + (context_features or 0)
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(_zero_init(nn.Linear(width, out_features)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        _check_context(self, context, x.shape[0])
        if context is not None:
            x = torch.cat([x, context.to(x.dtype)], dim=1)
        out = fused_forward(self.net, x) if self.fused else None
        return self.net(x) if out is None else out


class _ResidualBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))); no batch norm, whose batch statistics would make inverse != forward^-1."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNetConditioner(nn.Module):
    """A small residual CNN conditioner for images: ``[B, in_channels, H, W] -> [B, out_channels, H, W]``.

    A 3x3 convolution to `hidden` channels, `num_blocks` residual blocks ``x + conv(relu(conv(relu(x))))``, then
    ReLU and a 3x3 output convolution that starts at zero (so the coupling it feeds starts as the identity). No
    batch norm: its batch statistics would make ``inverse`` differ from ``forward^-1``. The context, if any, is
    projected to a per-channel bias of the first feature map.

    Args:
        in_channels: channels of the input, the kept elements (int >= 1).
        out_channels: channels of the output, the coupling's ``h`` (int >= 1).
        hidden: channels of the feature maps (int >= 1); default 64.
        num_blocks: how many residual blocks (int >= 0); default 2.
        context_features: width of the per-sample context (int >= 1), or None (the default) for no context.

    Returns:
        Called as ``net(x, context=None)`` with ``x`` of shape ``[B, in_channels, H, W]`` (and ``context`` of
        shape ``[B, context_features]`` exactly when `context_features` is set): ``h`` of shape
        ``[B, out_channels, H, W]``.

    Example:
        >>> net = ResNetConditioner(2, 6, hidden=8, num_blocks=1)
        >>> net(torch.randn(1, 2, 4, 4)).shape
        torch.Size([1, 6, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 64,
        num_blocks: int = 2,
        context_features: Optional[int] = None,
    ):
        super().__init__()
        _check_sizes("ResNetConditioner", at_least_zero=dict(num_blocks=num_blocks), at_least_one=dict(
            in_channels=in_channels, out_channels=out_channels, hidden=hidden, context_features=context_features))
        self.in_channels, self.out_channels, self.context_features = in_channels, out_channels, context_features
        self.stem = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.context_bias = nn.Linear(context_features, hidden) if context_features else None
        self.blocks = nn.Sequential(*[_ResidualBlock(hidden) for _ in range(num_blocks)])
        self.head = nn.Sequential(nn.ReLU(), _zero_init(nn.Conv2d(hidden, out_channels, 3, padding=1)))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        _check_context(self, context, x.shape[0])
        features = self.stem(x)
        if self.context_bias is not None:
            features = features + self.context_bias(context.to(x.dtype))[:, :, None, None]
        return self.head(self.blocks(features))
