"""What every flow layer is: an invertible map with a per-sample log-determinant (SPEC section 5).

Layers map data towards the latent in `forward` and back in `inverse`; both return `(output, logdet)` with
`logdet[b] = log|det d output / d input|` for sample `b`. Shapes are checked when a model is put together
(:func:`propagate_shapes`), so a layer that does not fit fails at construction, not deep inside a kernel.
"""

from __future__ import annotations

import numbers
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor, nn

from .._arguments import logdet_dtype

Shape = tuple[int, ...]


class FlowLayer(nn.Module):
    """Base class of the invertible layers: `forward` maps data towards the latent, `inverse` maps back.

    Subclasses implement :meth:`forward` and :meth:`inverse`. A layer that knows the sample shape it accepts
    stores it as ``input_shape`` (else ``None``); a layer that changes shapes overrides :meth:`output_shape`.
    Models walk these at construction (:func:`propagate_shapes`), so a layer that does not fit fails there.

    Returns:
        Called as ``layer(x, context=None)``: ``(y, logdet)``, as :meth:`forward`.

    Example:
        >>> from nf_kernels.flows import Squeeze
        >>> layer = Squeeze()
        >>> y, logdet = layer(torch.zeros(2, 1, 4, 4))
        >>> isinstance(layer, FlowLayer), layer.output_shape((1, 4, 4)), y.shape, logdet.shape
        (True, (4, 2, 2), torch.Size([2, 4, 2, 2]), torch.Size([2]))
    """

    input_shape: Optional[Shape] = None

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """Map a batch towards the latent: ``y = f(x)``, with ``logdet[b] = log|det df/dx|`` at sample ``b``.

        Args:
            x: a batch ``[B, *input_shape]`` of floating-point samples.
            context: per-sample conditioning ``[B, context_features]`` for layers that read one (the couplings
                of a conditional model); default None. Other layers ignore it.

        Returns:
            ``(y, logdet)``: ``y`` of shape ``[B, *output_shape(input_shape)]`` in ``x``'s dtype, and ``logdet``
            of shape ``[B]`` (float32 for float16 and bfloat16 data, else ``x``'s dtype).
        """
        raise NotImplementedError

    def inverse(self, y: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:  # pragma: no cover
        """Map a batch back towards the data: ``x = f^-1(y)``, with ``logdet[b] = log|det df^-1/dy|``.

        Args:
            y: a batch ``[B, *output_shape(input_shape)]`` of floating-point samples.
            context: the conditioning that `forward` got; default None.

        Returns:
            ``(x, logdet)``: ``x`` of shape ``[B, *input_shape]`` in ``y``'s dtype, and ``logdet`` of shape ``[B]``,
            the negative of the forward log-det at ``x``.
        """
        raise NotImplementedError

    def output_shape(self, input_shape: Shape) -> Shape:
        """The shape of one output sample for one input sample of `input_shape` (identity by default).

        Args:
            input_shape: one sample's shape, without the batch dim.

        Returns:
            One output sample's shape, a tuple of ints; a ValueError if the layer does not take `input_shape`.
        """
        return tuple(input_shape)

    def check_input(self, x: Tensor) -> None:
        """ValueError unless `x` is a batch of samples of this layer's `input_shape` (when known)."""
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{type(self).__name__} was built for samples of shape {self.input_shape}, "
                f"got a batch of shape {tuple(x.shape)}"
            )


def zero_logdet(x: Tensor) -> Tensor:
    """A zero log-det for the batch `x`, with the dtype the coupling ops use (float32 for half types)."""
    return torch.zeros(x.shape[0], dtype=logdet_dtype(x.dtype), device=x.device)


def propagate_shapes(layers: Iterable[nn.Module], input_shape: Sequence[int]) -> Shape:
    """The sample shape after `layers`, checking that each layer accepts what the previous one gives.

    >>> from nf_kernels.flows import Squeeze
    >>> propagate_shapes([Squeeze()], (3, 8, 8))
    (12, 4, 4)
    """
    shape = tuple(int(s) for s in input_shape)
    for index, layer in enumerate(layers):
        expected = getattr(layer, "input_shape", None)
        if expected is not None and tuple(expected) != shape:
            raise ValueError(
                f"layer {index} ({type(layer).__name__}) expects samples of shape {tuple(expected)}, "
                f"but the layers before it produce {shape}"
            )
        output_shape = getattr(layer, "output_shape", None)
        shape = tuple(output_shape(shape)) if output_shape is not None else shape
    return shape


def check_channel_count(layer: str, count: int, input_shape: Sequence[int]) -> Shape:
    """`input_shape` unchanged, for a layer built for `count` channels (or features); else a ValueError.

    The `output_shape` of the layers that keep shapes but fix dim 1 at construction (ActNorm, 1x1 conv, permutations).
    """
    if len(input_shape) == 0 or input_shape[0] != count:
        raise ValueError(f"{layer}({count}) got samples of shape {tuple(input_shape)}")
    return tuple(input_shape)


def check_batch_channels(layer: str, count: int, x: Tensor, entries: str = "channels") -> None:
    """ValueError unless the batch `x` has `count` `entries` (channels, features) in dim 1."""
    if x.dim() < 2 or x.shape[1] != count:
        raise ValueError(f"{layer}({count}) expects {count} {entries} in dim 1, got shape {tuple(x.shape)}")


def check_num_samples(num_samples: int) -> int:
    """`num_samples` as an int; TypeError unless it is an integer, ValueError if it is negative (0 is fine)."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral):
        raise TypeError(f"num_samples must be an int >= 0, got {type(num_samples).__name__} {num_samples!r}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be an int >= 0, got {num_samples}")
    return int(num_samples)
