"""Model builders: NICE, RealNVP, Glow and NSF on the fused coupling ops, for vectors (D,) and images (C, H, W).

Every builder returns a :class:`Flow`. Sizes have small defaults and can be raised by keyword. Which sizes
a model uses depends on the data (see :func:`sizes_used`): vectors use `num_layers` (NICE, RealNVP) or `num_steps`
(Glow, NSF); images use `num_layers` (NICE) or `num_scales` and `num_steps` (RealNVP, Glow, NSF); only RealNVP has
`scale`, `clamp` and `final_steps` (images), only NSF `bins` and `bound`. A size the model does not use is a ValueError naming it, never silently
ignored. `hidden` is the conditioners' width and `depth` their hidden-layer (MLP) or residual-block (CNN) count.
`num_classes` makes the model class-conditional: labels (an integer tensor of values in ``[0, num_classes)``, one
per sample or a single one for all, passed as `context`) are embedded into `context_features`-wide vectors that
every conditioner reads.
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
from .labels import LabelEmbedding
from .scaling import Scaling
from .spline_coupling import SplineCoupling
from .split import MultiScaleSplit
from .squeeze import Squeeze

MODELS = ("nice", "realnvp", "glow", "nsf")
# Sizes some model uses for some data kind; each builder takes those of `_SIZES_USED` and rejects the others.
MODEL_SIZES = ("num_layers", "num_scales", "num_steps", "final_steps", "scale", "clamp", "bins", "bound")
_SIZES_USED = {
    ("nice", "vectors"): ("num_layers",),
    ("nice", "images"): ("num_layers",),
    ("realnvp", "vectors"): ("num_layers", "scale", "clamp"),
    ("realnvp", "images"): ("num_scales", "num_steps", "final_steps", "scale", "clamp"),
    ("glow", "vectors"): ("num_steps",),
    ("glow", "images"): ("num_scales", "num_steps"),
    ("nsf", "vectors"): ("num_steps", "bins", "bound"),
    ("nsf", "images"): ("num_scales", "num_steps", "bins", "bound"),
}


def _data_kind(shape: Shape) -> str:
    return "vectors" if len(shape) == 1 else "images"


def sizes_used(model: str, sample_shape: Sequence[int]) -> tuple[str, ...]:
    """The size options (of `MODEL_SIZES`) that `model` uses for samples of `sample_shape`.

    The builders reject the others (a ValueError naming them), so a caller that holds one set of sizes for several
    models passes each model only these.

    Args:
        model: ``"nice"``, ``"realnvp"``, ``"glow"`` or ``"nsf"`` (one of `MODELS`).
        sample_shape: one data sample's shape, vectors ``(D,)`` with ``D >= 2`` or images ``(C, H, W)``.

    Returns:
        The option names, a tuple of strings in `MODEL_SIZES` order.

    Example:
        >>> sizes_used("glow", (3, 32, 32)), sizes_used("nice", (2,))
        (('num_scales', 'num_steps'), ('num_layers',))
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: valid choices are {', '.join(map(repr, MODELS))}")
    return _SIZES_USED[model, _data_kind(_sample_shape(sample_shape, model))]


@dataclass(frozen=True)
class _Common:
    """The options every builder takes the same way."""

    hidden: int = 64
    depth: int = 2
    num_classes: Optional[int] = None
    context_features: int = 16
    backend: str = "auto"
    memory_saving: bool = False
    recompute_conditioner: bool = False
    compile: bool = False

    @classmethod
    def parse(cls, model: str, shape: Shape, options: dict[str, Any], sizes: dict[str, Any]) -> "_Common":
        """Split off the common options from `options`, the builder's `**options`. `sizes` are the builder's own
        size arguments whose default is None (those it uses for one data kind only), as given.

        A size this model does not use for this data kind is a ValueError; any other unknown option, a TypeError
        (a typo).
        """
        common = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - common - set(MODEL_SIZES))
        if unknown:
            valid = ", ".join(sorted(common) + list(_SIZES_USED[model, _data_kind(shape)]))
            raise TypeError(f"{model}() got unknown option(s) {', '.join(unknown)}; valid options are {valid}")
        given = [name for name in MODEL_SIZES if options.get(name) is not None or sizes.get(name) is not None]
        _reject_unused_sizes(model, shape, given, besides=sorted(common))
        parsed = cls(**{k: v for k, v in options.items() if k in common})
        _check_positive(hidden=parsed.hidden, depth=parsed.depth, context_features=parsed.context_features)
        if parsed.num_classes is not None and parsed.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (or None for an unconditional model), got {parsed.num_classes}")
        return parsed

    @property
    def coupling_options(self) -> dict[str, Any]:
        """What every coupling layer of the model gets."""
        context = self.context_features if self.num_classes else None
        return dict(hidden=self.hidden, depth=self.depth, context_features=context, backend=self.backend,
                    recompute_conditioner=self.recompute_conditioner)

    def flow(self, layers: list[nn.Module], sample_shape: Shape, base: Callable[[Shape], nn.Module]) -> Flow:
        encoder = LabelEmbedding(self.num_classes, self.context_features) if self.num_classes else None
        latent_shape = propagate_shapes(layers, sample_shape)
        return Flow(layers, base(latent_shape), memory_saving=self.memory_saving, sample_shape=sample_shape,
                    context_encoder=encoder, compile=self.compile)  # fmt: skip


def _reject_unused_sizes(model: str, shape: Shape, given: list[str], besides: list[str]) -> None:
    """ValueError naming the sizes in `given` that `model` does not use for samples of `shape`, if any."""
    used = _SIZES_USED[model, _data_kind(shape)]
    unused = [name for name in given if name not in used]
    if not unused:
        return
    kind = f"{_data_kind(shape)} {shape}"
    anywhere = {name for (m, _), names in _SIZES_USED.items() if m == model for name in names}
    absent = [name for name in unused if name not in anywhere]
    other_kind = [name for name in unused if name in anywhere]
    problems = [f"{model} has no {', '.join(absent)}"] if absent else []
    problems += [f"{model} on {kind} does not use {', '.join(other_kind)}"] if other_kind else []
    raise ValueError(f"{'; '.join(problems)}. On {kind} {model} takes {', '.join(used)} (besides {', '.join(besides)})")


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
    """NICE (Dinh et al. 2014): additive couplings, then a learned diagonal scaling, on a logistic prior.

    ``num_layers`` :class:`AdditiveCoupling` layers with alternating masks (halves with :class:`MLP` conditioners
    for vectors, checkerboards with :class:`ResNetConditioner` conditioners for images), then :class:`Scaling`;
    the base is :class:`StandardLogistic`, as in the paper. NICE has no other size: `num_scales`, `num_steps`,
    `final_steps`, `scale` and `clamp` are ValueErrors, any other unknown option a TypeError.

    Args:
        sample_shape: one data sample's shape: vectors ``(D,)`` with ``D >= 2``, or images ``(C, H, W)``.
        num_layers: how many couplings (int >= 1); default 4.
        hidden: the conditioners' width (int >= 1); default 64.
        depth: the conditioners' hidden layers (MLP, vectors) or residual blocks (CNN, images), int >= 1; default 2.
        num_classes: make the model class-conditional on this many classes (int >= 1): every call then takes
            integer labels in ``[0, num_classes)`` as `context`. Default None (unconditional).
        context_features: the width of the embedded labels the conditioners read (int >= 1); default 16. Used
            only with `num_classes`.
        backend: the fused coupling ops' backend: ``"auto"`` (the default), ``"reference"``, ``"triton"``,
            ``"cuda"`` or ``"cpu"``.
        memory_saving: train with memory-saving backprop (see :class:`Flow`); default False.
        recompute_conditioner: each coupling keeps only its input for backward and reruns its conditioner there
            (one conditioner forward more a step, none of its activations kept); default False.
        compile: run the flow as ``torch.compile(fullgraph=True)`` graphs, the fused ops inside (see
            :class:`Flow`); default False. Excludes `memory_saving`.

    Returns:
        A :class:`Flow` over samples of `sample_shape`, latent of the same shape.

    Example:
        >>> flow = nice((2,), num_layers=2, hidden=8)
        >>> [type(layer).__name__ for layer in flow.layers]
        ['AdditiveCoupling', 'AdditiveCoupling', 'Scaling']
    """
    shape = _sample_shape(sample_shape, "nice")
    common = _Common.parse("nice", shape, options, {})
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
    num_layers: Optional[int] = None,
    num_scales: Optional[int] = None,
    num_steps: Optional[int] = None,
    final_steps: Optional[int] = None,
    scale: str = "tanh",
    clamp: float = 2.0,
    **options: Any,
) -> Flow:
    """RealNVP (Dinh et al. 2016): affine couplings, multi-scale on images, on a standard normal base.

    Vectors: `num_layers` :class:`AffineCoupling` layers on alternating halves, with :class:`MLP` conditioners.
    Images: `num_scales` scales; per scale, `num_steps` checkerboard couplings, a :class:`Squeeze`, `num_steps`
    channel-half couplings, then half the channels are factored out (:class:`MultiScaleSplit`) and the next scale
    continues on the rest; the last scale has `final_steps` checkerboard couplings, as in the paper. Masks
    alternate; conditioners are :class:`ResNetConditioner`. Sizes of the other data kind are ValueErrors (see
    :func:`sizes_used`), any other unknown option a TypeError.

    Args:
        sample_shape: one data sample's shape: vectors ``(D,)`` with ``D >= 2``, or images ``(C, H, W)`` with
            ``H`` and ``W`` divisible by ``2 ** (num_scales - 1)``.
        num_layers: vectors only: how many couplings (int >= 1); default None, meaning 4.
        num_scales: images only: how many scales (int >= 1); default None, meaning 2.
        num_steps: images only: couplings of each kind per scale (int >= 1); default None, meaning 3.
        final_steps: images only: checkerboard couplings of the last scale (int >= 1); default None, meaning
            ``num_steps + 1``.
        scale: the couplings' log-scale map, ``"exp"``, ``"tanh"``, ``"atan"`` or ``"sigmoid"`` (see
            :class:`AffineCoupling`); default ``"tanh"``, a soft clamp that trains more stably than the paper's
            plain ``"exp"``.
        clamp: the bound of the ``"tanh"`` and ``"atan"`` log-scales, a finite float > 0; default 2.0.
        hidden: the conditioners' width (int >= 1); default 64.
        depth: the conditioners' hidden layers (MLP, vectors) or residual blocks (CNN, images), int >= 1; default 2.
        num_classes: make the model class-conditional on this many classes (int >= 1): every call then takes
            integer labels in ``[0, num_classes)`` as `context`. Default None (unconditional).
        context_features: the width of the embedded labels the conditioners read (int >= 1); default 16. Used
            only with `num_classes`.
        backend: the fused coupling ops' backend: ``"auto"`` (the default), ``"reference"``, ``"triton"``,
            ``"cuda"`` or ``"cpu"``.
        memory_saving: train with memory-saving backprop (see :class:`Flow`); default False.
        recompute_conditioner: each coupling keeps only its input for backward and reruns its conditioner there
            (one conditioner forward more a step, none of its activations kept); default False.
        compile: run the flow as ``torch.compile(fullgraph=True)`` graphs, the fused ops inside (see
            :class:`Flow`); default False. Excludes `memory_saving`.

    Returns:
        A :class:`Flow` over samples of `sample_shape`; its latent is of the same shape for vectors, a flat
        ``(C * H * W,)`` vector for images.

    Example:
        >>> flow = realnvp((1, 4, 4), num_scales=2, num_steps=1, hidden=8, depth=1)
        >>> flow.sample(2).shape, flow.base.shape
        (torch.Size([2, 1, 4, 4]), (16,))
    """
    shape = _sample_shape(sample_shape, "realnvp")
    sizes = dict(num_layers=num_layers, num_scales=num_scales, num_steps=num_steps, final_steps=final_steps)
    common = _Common.parse("realnvp", shape, options, sizes)
    num_layers = 4 if num_layers is None else num_layers
    num_scales = 2 if num_scales is None else num_scales
    num_steps = 3 if num_steps is None else num_steps
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


def glow(
    sample_shape: Sequence[int], *, num_scales: Optional[int] = None, num_steps: int = 4, **options: Any
) -> Flow:
    """Glow (Kingma and Dhariwal 2018): steps of ActNorm, 1x1 conv and coupling, on a standard normal base.

    Images: `num_scales` levels of (:class:`Squeeze`, `num_steps` x [:class:`ActNorm`,
    :class:`Invertible1x1Conv`, :class:`AffineCoupling`]), with half the channels factored out between levels
    (:class:`MultiScaleSplit`). Vectors: `num_steps` such steps without squeezes or splits. Couplings use Glow's
    form, sigmoid scale and shift first on channel halves, so there is no `scale` or `clamp` to choose; those,
    `num_layers`, `final_steps` and `num_scales` on vectors are ValueErrors, any other unknown option a TypeError.

    Args:
        sample_shape: one data sample's shape: vectors ``(D,)`` with ``D >= 2``, or images ``(C, H, W)`` with
            ``H`` and ``W`` divisible by ``2 ** num_scales``.
        num_scales: images only: how many levels (int >= 1); default None, meaning 2.
        num_steps: steps per level (images) or in all (vectors), int >= 1; default 4.
        hidden: the conditioners' width (int >= 1); default 64.
        depth: the conditioners' hidden layers (MLP, vectors) or residual blocks (CNN, images), int >= 1; default 2.
        num_classes: make the model class-conditional on this many classes (int >= 1): every call then takes
            integer labels in ``[0, num_classes)`` as `context`. Default None (unconditional).
        context_features: the width of the embedded labels the conditioners read (int >= 1); default 16. Used
            only with `num_classes`.
        backend: the fused coupling ops' backend: ``"auto"`` (the default), ``"reference"``, ``"triton"``,
            ``"cuda"`` or ``"cpu"``.
        memory_saving: train with memory-saving backprop (see :class:`Flow`); default False.
        recompute_conditioner: each coupling keeps only its input for backward and reruns its conditioner there
            (one conditioner forward more a step, none of its activations kept); default False.
        compile: run the flow as ``torch.compile(fullgraph=True)`` graphs, the fused ops inside (see
            :class:`Flow`); default False. Excludes `memory_saving`.

    Returns:
        A :class:`Flow` over samples of `sample_shape`; its latent is of the same shape for vectors, a flat
        ``(C * H * W,)`` vector for images.

    Example:
        >>> import torch
        >>> flow = glow((1, 4, 4), num_scales=2, num_steps=1, hidden=8, depth=1)
        >>> flow.log_prob(torch.rand(3, 1, 4, 4)).shape
        torch.Size([3])
    """
    shape = _sample_shape(sample_shape, "glow")
    common = _Common.parse("glow", shape, options, dict(num_scales=num_scales))
    num_scales = 2 if num_scales is None else num_scales
    _check_positive(num_scales=num_scales, num_steps=num_steps)

    def coupling(input_shape: Shape, step: int) -> nn.Module:
        return AffineCoupling(input_shape, mask="half", scale="sigmoid", shift_first=True, **common.coupling_options)

    return _glow_levels("glow", shape, common, num_scales, num_steps, coupling)


def _glow_levels(model: str, shape: Shape, common: _Common, num_scales: int, num_steps: int,
                 coupling: Callable[[Shape, int], nn.Module]) -> Flow:  # fmt: skip
    """Glow's architecture with `coupling(input_shape, step)` as each step's coupling: steps of ActNorm, 1x1 conv
    and coupling; on images `num_scales` levels of a squeeze and the steps, half the channels factored out between
    them."""

    def steps(input_shape: Shape) -> list[nn.Module]:
        channels = input_shape[0]
        layers: list[nn.Module] = []
        for step in range(num_steps):
            layers += [ActNorm(channels), Invertible1x1Conv(channels), coupling(input_shape, step)]
        return layers

    if len(shape) == 1:
        return common.flow(steps(shape), shape, StandardNormal)
    _check_squeezes(shape, num_scales, num_scales, model)

    def level_body(input_shape: Shape, last: bool) -> tuple[list[nn.Module], Shape]:
        squeeze = Squeeze(input_shape=input_shape)
        squeezed = squeeze.output_shape(input_shape)
        return [squeeze] + steps(squeezed), squeezed

    return common.flow(_multi_scale(shape, num_scales, level_body), shape, StandardNormal)


def nsf(
    sample_shape: Sequence[int],
    *,
    num_scales: Optional[int] = None,
    num_steps: int = 4,
    bins: int = 8,
    bound: float = 3.0,
    **options: Any,
) -> Flow:
    """A neural spline flow (Durkan et al. 2019): Glow's steps with rational-quadratic spline couplings.

    Each step is :class:`ActNorm`, :class:`Invertible1x1Conv` (the linear mixing the paper puts between
    couplings) and a :class:`SplineCoupling` on channel halves with `bins` bins on ``[-bound, bound]``, flipping
    halves from step to step; images get Glow's levels (:class:`Squeeze`, the steps, :class:`MultiScaleSplit`).
    Couplings start as the identity. `num_layers`, `final_steps`, `scale`, `clamp` and `num_scales` on vectors are
    ValueErrors, any other unknown option a TypeError.

    Args:
        sample_shape: one data sample's shape: vectors ``(D,)`` with ``D >= 2``, or images ``(C, H, W)`` with
            ``H`` and ``W`` divisible by ``2 ** num_scales``.
        num_scales: images only: how many levels (int >= 1); default None, meaning 2.
        num_steps: steps per level (images) or in all (vectors), int >= 1; default 4.
        bins: spline bins (int >= 1); default 8.
        bound: the splines' interval ``[-bound, bound]``, the identity outside; default 3.0.
        hidden: the conditioners' width (int >= 1); default 64.
        depth: the conditioners' hidden layers (MLP, vectors) or residual blocks (CNN, images), int >= 1; default 2.
        num_classes: make the model class-conditional on this many classes (int >= 1); default None.
        context_features: the width of the embedded labels the conditioners read (int >= 1); default 16.
        backend: the fused ops' backend: ``"auto"`` (the default: one with spline kernels), ``"reference"``,
            ``"triton"``, ``"cuda"`` or ``"cpu"``.
        memory_saving: train with memory-saving backprop (see :class:`Flow`); default False.
        recompute_conditioner: each coupling keeps only its input for backward and reruns its conditioner there
            (one conditioner forward more a step, none of its activations kept); default False.
        compile: run the flow as ``torch.compile(fullgraph=True)`` graphs (see :class:`Flow`); default False.

    Returns:
        A :class:`Flow` over samples of `sample_shape`; its latent is of the same shape for vectors, a flat
        ``(C * H * W,)`` vector for images.

    Example:
        >>> import torch
        >>> flow = nsf((2,), num_steps=2, hidden=8, bins=4)
        >>> flow.log_prob(torch.randn(3, 2)).shape
        torch.Size([3])
    """
    shape = _sample_shape(sample_shape, "nsf")
    common = _Common.parse("nsf", shape, options, dict(num_scales=num_scales))
    num_scales = 2 if num_scales is None else num_scales
    _check_positive(num_scales=num_scales, num_steps=num_steps, bins=bins)

    def coupling(input_shape: Shape, step: int) -> nn.Module:
        return SplineCoupling(input_shape, mask="half", flip=step % 2 == 1, bins=bins, bound=bound,
                              **common.coupling_options)  # fmt: skip

    return _glow_levels("nsf", shape, common, num_scales, num_steps, coupling)


_BUILDERS = {"nice": nice, "realnvp": realnvp, "glow": glow, "nsf": nsf}


def build_model(
    name: str,
    sample_shape: Sequence[int],
    *,
    backend: str = "auto",
    memory_saving: bool = False,
    compile: bool = False,
    num_classes: Optional[int] = None,
    **sizes: Any,
) -> Flow:
    """Build the model called `name` for samples of `sample_shape`: :func:`nice`, :func:`realnvp`, :func:`glow` or
    :func:`nsf`.

    Args:
        name: ``"nice"``, ``"realnvp"``, ``"glow"`` or ``"nsf"`` (one of `MODELS`).
        sample_shape: one data sample's shape: vectors ``(D,)`` with ``D >= 2``, or images ``(C, H, W)``.
        backend: the fused coupling ops' backend: ``"auto"`` (the default), ``"reference"``, ``"triton"``,
            ``"cuda"`` or ``"cpu"``.
        memory_saving: train with memory-saving backprop (see :class:`Flow`); default False.
        recompute_conditioner: each coupling keeps only its input for backward and reruns its conditioner there
            (one conditioner forward more a step, none of its activations kept); default False.
        compile: run the flow as ``torch.compile(fullgraph=True)`` graphs, the fused ops inside (see
            :class:`Flow`); default False. Excludes `memory_saving`.
        num_classes: make the model class-conditional on this many classes (int >= 1); default None.
        sizes: the builder's other options, by keyword: its sizes (:func:`sizes_used` lists those this model
            takes for this data; others are ValueErrors) and `hidden`, `depth`, `context_features`.

    Returns:
        The :class:`Flow` the builder returns.

    Example:
        >>> flow = build_model("glow", (2,), num_steps=2, hidden=8)
        >>> flow.sample(4).shape
        torch.Size([4, 2])
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}: valid choices are {', '.join(map(repr, MODELS))}")
    return _BUILDERS[name](
        sample_shape, backend=backend, memory_saving=memory_saving, compile=compile, num_classes=num_classes, **sizes
    )
