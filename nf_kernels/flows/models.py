"""Model builders: NICE, RealNVP and Glow on the fused coupling ops, for vectors (D,) and images (C, H, W).

Every builder returns a :class:`Flow`. Sizes have small defaults and can be raised by keyword. Which sizes
matter depends on the data: vectors use `num_layers` (NICE, RealNVP) or `num_steps` (Glow); images use
`num_layers` (NICE) or `num_scales` and `num_steps` (RealNVP, Glow). Sizes that do not apply are ignored, so one
set of options can be passed to every model. `hidden` is the conditioners' width and `depth` their hidden-layer
(MLP) or residual-block (CNN) count. `num_classes` makes the model class-conditional: labels (a LongTensor passed
as `context`) are embedded into `context_features`-wide vectors that every conditioner reads.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Sequence

from torch import nn

from .actnorm import ActNorm
from .base import Shape, propagate_shapes
from .conv1x1 import Invertible1x1Conv
from .coupling import AdditiveCoupling, AffineCoupling
from .distributions import StandardLogistic, StandardNormal
from .flow import Flow
from .scaling import Scaling
from .split import MultiScaleSplit
from .squeeze import Squeeze

MODELS = ("nice", "realnvp", "glow")
# Sizes some model or data kind uses; every builder accepts all of them (see the module docstring).
MODEL_SIZES = ("num_layers", "num_scales", "num_steps", "final_steps", "scale", "clamp")


@dataclass(frozen=True)
class _Common:
    """The options every builder takes the same way."""

    hidden: int = 64
    depth: int = 2
    num_classes: Optional[int] = None
    context_features: int = 16
    backend: str = "auto"
    memory_saving: bool = False

    @classmethod
    def parse(cls, model: str, options: dict[str, Any]) -> "_Common":
        """Split off the common options; sizes of other models are ignored, anything else is a typo."""
        common = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - common - set(MODEL_SIZES))
        if unknown:
            valid = ", ".join(sorted(common | set(MODEL_SIZES)))
            raise TypeError(f"{model}() got unknown option(s) {', '.join(unknown)}; valid options are {valid}")
        parsed = cls(**{k: v for k, v in options.items() if k in common})
        _check_positive(hidden=parsed.hidden, depth=parsed.depth, context_features=parsed.context_features)
        if parsed.num_classes is not None and parsed.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (or None for an unconditional model), got {parsed.num_classes}")
        return parsed

    @property
    def coupling_options(self) -> dict[str, Any]:
        """What every coupling layer of the model gets."""
        context = self.context_features if self.num_classes else None
        return dict(hidden=self.hidden, depth=self.depth, context_features=context, backend=self.backend)

    def flow(self, layers: list[nn.Module], sample_shape: Shape, base: Callable[[Shape], nn.Module]) -> Flow:
        encoder = nn.Embedding(self.num_classes, self.context_features) if self.num_classes else None
        latent_shape = propagate_shapes(layers, sample_shape)
        return Flow(layers, base(latent_shape), memory_saving=self.memory_saving, sample_shape=sample_shape,
                    context_encoder=encoder)  # fmt: skip


def _sample_shape(sample_shape: Sequence[int], model: str) -> Shape:
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) not in (1, 3) or any(s <= 0 for s in shape):
        raise ValueError(f"{model} builds for vectors (D,) or images (C, H, W), got sample_shape {tuple(sample_shape)}")
    if len(shape) == 1 and shape[0] < 2:
        raise ValueError(f"{model} on vectors needs D >= 2 (a coupling keeps half and transforms half), got {shape}")
    return shape


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_squeezes(shape: Shape, num_scales: int, squeezes: int, model: str) -> None:
    """Each squeeze halves H and W, so they must stay even that many times: say so before building anything."""
    divisor = 2**squeezes
    if shape[1] % divisor or shape[2] % divisor:
        raise ValueError(
            f"{model} with num_scales={num_scales} squeezes {squeezes} times, so H and W must be divisible by "
            f"{divisor}; got sample shape {shape}. Use fewer scales or pad the images"
        )


def _multi_scale(
    shape: Shape, num_scales: int, scale_body: Callable[[Shape, bool], tuple[list[nn.Module], Shape]]
) -> list[nn.Module]:
    """Nest the scales: each but the last ends by factoring half its channels out, the next continues on the rest.

    `scale_body(shape, last)` returns one scale's layers and the shape they produce.
    """
    layers, shape_out = scale_body(shape, num_scales == 1)
    if num_scales > 1:
        inner = _multi_scale(MultiScaleSplit.kept_shape(shape_out), num_scales - 1, scale_body)
        layers.append(MultiScaleSplit(shape_out, inner))
    return layers


def nice(sample_shape: Sequence[int], *, num_layers: int = 4, **options: Any) -> Flow:
    """NICE: `num_layers` additive couplings with alternating masks (halves for vectors, checkerboards for
    images), then a learned diagonal scaling; logistic prior, as in the paper.

    `options`: hidden=64, depth=2, num_classes=None, context_features=16, backend="auto", memory_saving=False.

    >>> flow = nice((2,), num_layers=2, hidden=8)
    >>> [type(layer).__name__ for layer in flow.layers]
    ['AdditiveCoupling', 'AdditiveCoupling', 'Scaling']
    """
    shape = _sample_shape(sample_shape, "nice")
    common = _Common.parse("nice", options)
    _check_positive(num_layers=num_layers)
    mask = "half" if len(shape) == 1 else "checkerboard"
    layers: list[nn.Module] = [
        AdditiveCoupling(shape, mask=mask, flip=i % 2 == 1, **common.coupling_options) for i in range(num_layers)
    ]
    layers.append(Scaling(shape))
    return common.flow(layers, shape, StandardLogistic)


def realnvp(
    sample_shape: Sequence[int],
    *,
    num_layers: int = 4,
    num_scales: int = 2,
    num_steps: int = 3,
    final_steps: Optional[int] = None,
    scale: str = "tanh",
    clamp: float = 2.0,
    **options: Any,
) -> Flow:
    """RealNVP. Vectors: `num_layers` affine couplings on alternating halves, with MLP conditioners.

    Images, per scale: `num_steps` checkerboard couplings, a squeeze, `num_steps` channel-half couplings, then
    half the channels are factored out and the next scale continues on the rest; the last scale has
    `final_steps` (default ``num_steps + 1``) checkerboard couplings, as in the paper. Masks alternate. The
    default soft-clamped scale (``scale="tanh"``) trains more stably than the paper's plain ``"exp"``.
    `options` as for :func:`nice`.

    >>> flow = realnvp((1, 4, 4), num_scales=2, num_steps=1, hidden=8, depth=1)
    >>> flow.sample(2).shape, flow.base.shape
    (torch.Size([2, 1, 4, 4]), (16,))
    """
    shape = _sample_shape(sample_shape, "realnvp")
    common = _Common.parse("realnvp", options)
    final_steps = num_steps + 1 if final_steps is None else final_steps
    _check_positive(num_layers=num_layers, num_scales=num_scales, num_steps=num_steps, final_steps=final_steps)

    def couplings(input_shape: Shape, mask: str, count: int) -> list[nn.Module]:
        return [
            AffineCoupling(input_shape, mask=mask, flip=i % 2 == 1, scale=scale, clamp=clamp, **common.coupling_options)
            for i in range(count)
        ]

    if len(shape) == 1:
        return common.flow(couplings(shape, "half", num_layers), shape, StandardNormal)
    _check_squeezes(shape, num_scales, num_scales - 1, "realnvp")

    def scale_body(input_shape: Shape, last: bool) -> tuple[list[nn.Module], Shape]:
        if last:
            return couplings(input_shape, "checkerboard", final_steps), input_shape
        squeeze = Squeeze(input_shape=input_shape)
        squeezed = squeeze.output_shape(input_shape)
        layers = couplings(input_shape, "checkerboard", num_steps) + [squeeze] + couplings(squeezed, "half", num_steps)
        return layers, squeezed

    return common.flow(_multi_scale(shape, num_scales, scale_body), shape, StandardNormal)


def glow(sample_shape: Sequence[int], *, num_scales: int = 2, num_steps: int = 4, **options: Any) -> Flow:
    """Glow: `num_scales` levels of (squeeze, `num_steps` x [ActNorm, invertible 1x1 conv, affine coupling]), with
    half the channels factored out between levels. Couplings use Glow's form: sigmoid scale, shift first, on
    channel halves. Vectors get `num_steps` such steps without squeezes or splits. `options` as for :func:`nice`.

    >>> import torch
    >>> flow = glow((1, 4, 4), num_scales=2, num_steps=1, hidden=8, depth=1)
    >>> flow.log_prob(torch.rand(3, 1, 4, 4)).shape
    torch.Size([3])
    """
    shape = _sample_shape(sample_shape, "glow")
    common = _Common.parse("glow", options)
    _check_positive(num_scales=num_scales, num_steps=num_steps)

    def steps(input_shape: Shape) -> list[nn.Module]:
        channels = input_shape[0]
        layers: list[nn.Module] = []
        for _ in range(num_steps):
            layers += [
                ActNorm(channels),
                Invertible1x1Conv(channels),
                AffineCoupling(input_shape, mask="half", scale="sigmoid", shift_first=True, **common.coupling_options),
            ]
        return layers

    if len(shape) == 1:
        return common.flow(steps(shape), shape, StandardNormal)
    _check_squeezes(shape, num_scales, num_scales, "glow")

    def level_body(input_shape: Shape, last: bool) -> tuple[list[nn.Module], Shape]:
        squeeze = Squeeze(input_shape=input_shape)
        squeezed = squeeze.output_shape(input_shape)
        return [squeeze] + steps(squeezed), squeezed

    return common.flow(_multi_scale(shape, num_scales, level_body), shape, StandardNormal)


_BUILDERS = {"nice": nice, "realnvp": realnvp, "glow": glow}


def build_model(
    name: str,
    sample_shape: Sequence[int],
    *,
    backend: str = "auto",
    memory_saving: bool = False,
    num_classes: Optional[int] = None,
    **sizes: Any,
) -> Flow:
    """Build the model called `name` ("nice", "realnvp" or "glow") for samples of `sample_shape`.

    >>> flow = build_model("glow", (2,), num_steps=2, hidden=8)
    >>> flow.sample(4).shape
    torch.Size([4, 2])
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}: valid choices are {', '.join(map(repr, MODELS))}")
    return _BUILDERS[name](
        sample_shape, backend=backend, memory_saving=memory_saving, num_classes=num_classes, **sizes
    )
