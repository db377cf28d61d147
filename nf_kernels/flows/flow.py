"""`Flow`: the sequential container that turns invertible layers and a base distribution into a density model.

Also the standard path through a stack of layers (:func:`forward_layers`, :func:`inverse_layers`), which `Flow` and
the inner stack of a :class:`MultiScaleSplit` both run; memory-saving backprop (memory_saving.py) is an option of it.
With `compiled`, `Flow` runs its layers and base density as one `torch.compile(fullgraph=True)` graph per entry
point, the fused coupling ops inside it.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from .base import check_num_samples, propagate_shapes, zero_logdet
from .memory_saving import forward_keeping_no_activations


def forward_layers(
    layers: Sequence[nn.Module], x: Tensor, context: Optional[Tensor], memory_saving: bool = False
) -> tuple[Tensor, Tensor]:
    """Apply `layers` in order, summing their log-dets.

    The standard path keeps every layer's activations for backward; with `memory_saving`, the stack is one
    autograd node that keeps only its output and rebuilds the rest during backward (memory_saving.py).
    """
    if memory_saving:
        return forward_keeping_no_activations(forward_layers, layers, x, context)
    logdets = []
    for layer in layers:
        x, layer_logdet = layer(x, context)
        logdets.append(layer_logdet)
    return x, _summed(logdets, x)


def inverse_layers(layers: Sequence[nn.Module], y: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Apply the layers' inverses, last layer first, summing their log-dets."""
    logdets = []
    for layer in reversed(layers):
        y, layer_logdet = layer.inverse(y, context)
        logdets.append(layer_logdet)
    return y, _summed(logdets, y)


def _summed(logdets: list[Tensor], x: Tensor) -> Tensor:
    """The layers' log-dets added up in one op, and one autograd node, rather than a chain of one per layer."""
    return torch.stack(logdets).sum(0) if logdets else zero_logdet(x)


class Flow(nn.Module):
    """A normalizing flow: invertible `layers` map data `x` to a latent `z` distributed as `base`.

    With ``f`` the layers applied in order::

        log p(x) = base.log_prob(f(x)) + log|det df/dx|        (natural log)
        sample:   z ~ base,  x = f^-1(z)

    Every method checks its batch: the model's sample (or latent) shape, its dtype and its device. A `context`
    is passed to every layer, after `context_encoder` if one is given; it holds one entry per sample, or a single
    one (a 0-d tensor, or a batch of 1) for all of them.

    Args:
        layers: the flow layers (:class:`FlowLayer` or any ``nn.Module`` with ``forward(x, context)`` and
            ``inverse(y, context)`` returning ``(output, logdet)``), data side first. Their shapes are checked
            against each other and against `base` at construction.
        base: the latent distribution, any module with ``log_prob(z) -> [B]`` and ``sample(num_samples,
            generator=None)``, such as :class:`StandardNormal`; its ``shape`` attribute, if it has one, is checked
            against the layers' output.
        memory_saving: run the layers with memory-saving backprop, which keeps no intermediate activations for
            backward (each layer's input is rebuilt from its output; see memory_saving.py); default False. It is
            also an attribute that can be set at any time.
        sample_shape: one data sample's shape; default None, the base distribution's shape. Give it when the
            layers change shapes (a multi-scale model's latent is flat).
        context_encoder: a module applied to the context before the layers see it, e.g. a :class:`LabelEmbedding`
            that turns class labels into the conditioners' context vectors; default None.
        compile: run `forward`, `inverse` and `log_prob` (so `sample` too, and training steps) as graphs of
            ``torch.compile(fullgraph=True)``, compiled on first use; default False. The checks of the batch and
            the context encoder stay outside the graph, and the state_dict is the same as without it. It is also
            the settable attribute `compiled`. Memory-saving backprop cannot run in a graph: the two exclude each
            other (a ValueError).

    Returns:
        Called as ``flow(x, context=None)``: ``(z, logdet)``, as :meth:`forward`.

    Example:
        >>> from nf_kernels.flows import AffineCoupling, StandardNormal
        >>> layers = [AffineCoupling((2,), hidden=8), AffineCoupling((2,), hidden=8, flip=True)]
        >>> flow = Flow(layers, StandardNormal((2,)))
        >>> flow.log_prob(torch.zeros(3, 2)).shape, flow.sample(5).shape
        (torch.Size([3]), torch.Size([5, 2]))
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        base: nn.Module,
        *,
        memory_saving: bool = False,
        sample_shape: Optional[Sequence[int]] = None,
        context_encoder: Optional[nn.Module] = None,
        compile: bool = False,
    ):
        super().__init__()
        self._compiled_entries: dict[str, Callable[..., Any]] = {}
        self._compiled, self._initializing_layers = False, []
        self.layers = nn.ModuleList(layers)
        self.base = base
        self.context_encoder = context_encoder
        base_shape = tuple(getattr(base, "shape", ()))
        self.sample_shape: tuple[int, ...] = tuple(int(s) for s in sample_shape) if sample_shape else base_shape
        # A base without a `shape` (a user's own distribution) leaves the shapes unchecked until data arrives.
        latent_shape = propagate_shapes(self.layers, self.sample_shape) if self.sample_shape else base_shape
        if base_shape and latent_shape != base_shape:
            raise ValueError(
                f"the layers map samples of shape {self.sample_shape} to {latent_shape}, "
                f"but the base distribution is over {base_shape}"
            )
        self.memory_saving = memory_saving
        self.compiled = compile

    @property
    def memory_saving(self) -> bool:
        """Whether the forward pass runs with memory-saving backprop (settable; nested stacks follow it)."""
        return self._memory_saving

    @memory_saving.setter
    def memory_saving(self, enabled: bool) -> None:
        if enabled and self._compiled:
            raise ValueError(_EXCLUSIVE)
        # Nested stacks (the layers of a multi-scale split) follow the model's setting.
        self._memory_saving = bool(enabled)
        for module in self.modules():
            if module is not self and hasattr(module, "memory_saving"):
                module.memory_saving = self._memory_saving

    @property
    def compiled(self) -> bool:
        """Whether `forward`, `inverse` and `log_prob` run as ``torch.compile(fullgraph=True)`` graphs (settable)."""
        return self._compiled

    @compiled.setter
    def compiled(self, enabled: bool) -> None:
        if enabled and self.memory_saving:
            raise ValueError(_EXCLUSIVE)
        self._compiled = bool(enabled)
        self._compiled_entries = {}
        # The layers that may initialize from data, found once: walking every module on every call costs more
        # than a small compiled step.
        self._initializing_layers = [m for m in self.modules() if hasattr(type(m), "initialization_pending")]

    def _run(self, entry: Callable[..., Any], *args: Any) -> Any:
        """`entry(*args)`, through its compiled graph when the flow is compiled.

        A layer that initializes itself from the data (ActNorm's first training batch) reads values back to the
        host, which a graph cannot: that one call runs eagerly, and the graph, compiled afterwards, never sees it.
        Graphs are specialized to the sample shape and dtype but not to the batch size, so batches of any size
        share them (batch size 1 gets its own, as do train and eval mode). Each flow counts its recompilations on
        its own, so building many models in one process never exhausts a shared limit; and dynamic shapes stop
        at the batch size (torch's automatic dynamic shapes would make every dim symbolic once a second model's
        shapes differ, which inductor cannot always lay out).
        """
        if not self._compiled or any(m.initialization_pending for m in self._initializing_layers):
            return entry(*args)
        name = entry.__name__
        if name not in self._compiled_entries:
            self._compiled_entries[name] = torch.compile(entry, fullgraph=True, dynamic=False, isolate_recompiles=True)
        for batch in args:  # the data and the context, both [B, ...]
            if isinstance(batch, Tensor) and batch.dim() > 0:
                torch._dynamo.maybe_mark_dynamic(batch, 0)
        return self._compiled_entries[name](*args)

    def __getstate__(self) -> dict[str, Any]:
        # Compiled graphs belong to this process and this object; a copy or an unpickled flow compiles its own.
        return {**super().__getstate__(), "_compiled_entries": {}}

    def _context_for(self, context: Optional[Tensor], batch: int) -> Optional[Tensor]:
        """One context entry per sample (a single given entry is broadcast), through the encoder if there is one."""
        if context is None:
            return None
        if not isinstance(context, Tensor):
            raise TypeError(
                "context must be a tensor with one entry per sample or a single one for all, for class labels an "
                f"integer tensor such as torch.tensor(3); got {type(context).__name__} {context!r}"
            )
        if context.dim() == 0 or context.shape[0] == 1:
            context = context.reshape(1, *context.shape[1:]).expand(batch, *context.shape[1:])
        elif context.shape[0] != batch:
            raise ValueError(
                f"context must have one entry per sample ({batch}) or a single one for all, "
                f"got shape {tuple(context.shape)}"
            )
        return context if self.context_encoder is None else self.context_encoder(context)

    def _check_batch(self, x: Tensor, what: str, shape: tuple[int, ...]) -> None:
        """A batch of `shape` samples, in the dtype and on the device of the model (a raw conv error otherwise)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if shape and tuple(x.shape[1:]) != shape:
            raise ValueError(f"{what} must be a batch of samples of shape {shape}, got {tuple(x.shape)}")
        like = next((t for t in itertools.chain(self.parameters(), self.buffers()) if t.is_floating_point()), None)
        if not x.is_floating_point():
            hint = "; dequantize integer data first (nf_kernels.flows.dequantize)" if what == "x" else ""
            expected = like.dtype if like is not None else "a floating dtype"
            raise TypeError(f"{what} must be a floating tensor ({expected}, like the model), got {x.dtype}{hint}")
        if like is None:
            return
        if x.dtype != like.dtype:
            raise TypeError(
                f"{what} is {x.dtype} but the model is {like.dtype}: convert one to the other "
                f"({what}.to({like.dtype}), or flow.to({x.dtype}))"
            )
        if x.device != like.device:
            raise ValueError(f"{what} is on {x.device} but the model is on {like.device}: move one to the other")

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Map data to the latent: ``z = f(x)`` and ``logdet = log|det df/dx|`` per sample.

        Args:
            x: a batch ``[B, *sample_shape]`` in the model's floating dtype and on its device (integer data:
                :func:`dequantize` first).
            context: the conditioning, one entry per sample or a single one for all (for a class-conditional
                model, integer labels such as ``torch.tensor([0, 2])`` or ``torch.tensor(3)``); default None.

        Returns:
            ``(z, logdet)``: ``z`` of shape ``[B, *latent_shape]`` (the base distribution's shape) in ``x``'s dtype,
            ``logdet`` of shape ``[B]`` (float32 for float16 and bfloat16 data, else ``x``'s dtype).

        Example:
            >>> from nf_kernels.flows import build_model
            >>> flow = build_model("realnvp", (1, 4, 4), num_scales=2, num_steps=1, hidden=8, depth=1)
            >>> z, logdet = flow(torch.rand(2, 1, 4, 4))
            >>> z.shape, logdet.shape
            (torch.Size([2, 16]), torch.Size([2]))
        """
        self._check_batch(x, "x", self.sample_shape)
        return self._run(self._forward, x, self._context_for(context, x.shape[0]))

    def _forward(self, x: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return forward_layers(self.layers, x, context, self.memory_saving)

    def inverse(self, z: Tensor, context: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Map latents to data: ``x = f^-1(z)`` and ``logdet = log|det df^-1/dz|`` per sample.

        Args:
            z: a batch ``[B, *latent_shape]`` (the base distribution's shape) in the model's floating dtype and
                on its device.
            context: the conditioning, as for :meth:`forward`; default None.

        Returns:
            ``(x, logdet)``: ``x`` of shape ``[B, *sample_shape]`` in ``z``'s dtype, ``logdet`` of shape ``[B]``,
            minus the forward log-det at ``x``.

        Example:
            >>> from nf_kernels.flows import build_model
            >>> flow = build_model("realnvp", (2,), hidden=8)
            >>> x, logdet = flow.inverse(torch.randn(3, 2))
            >>> x.shape, logdet.shape
            (torch.Size([3, 2]), torch.Size([3]))
        """
        self._check_batch(z, "z", tuple(getattr(self.base, "shape", ())))
        return self._run(self._inverse, z, self._context_for(context, z.shape[0]))

    def _inverse(self, z: Tensor, context: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return inverse_layers(self.layers, z, context)

    def log_prob(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        """Natural-log density of each sample: ``log p(x) = base.log_prob(f(x)) + log|det df/dx|``.

        Args:
            x: a batch ``[B, *sample_shape]`` in the model's floating dtype and on its device (integer data:
                :func:`dequantize` first).
            context: the conditioning, as for :meth:`forward`; default None.

        Returns:
            ``log p(x[b])`` for each sample, shape ``[B]``; ``-log_prob(x).mean()`` is the usual training loss.

        Example:
            >>> from nf_kernels.flows import build_model
            >>> flow = build_model("nice", (2,), hidden=8)
            >>> flow.log_prob(torch.randn(4, 2)).shape
            torch.Size([4])
        """
        self._check_batch(x, "x", self.sample_shape)
        return self._run(self._log_prob, x, self._context_for(context, x.shape[0]))

    def _log_prob(self, x: Tensor, context: Optional[Tensor]) -> Tensor:
        z, logdet = self._forward(x, context)
        return self.base.log_prob(z) + logdet

    def sample(
        self, num_samples: int, context: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """Draw from the model: ``z ~ base``, then ``x = f^-1(z)``.

        Args:
            num_samples: how many samples (int >= 0).
            context: the conditioning of a conditional model, one entry per sample or a single one for all (e.g.
                a 0-d label, ``torch.tensor(3)``); default None.
            generator: the random generator the base distribution draws from; default None (torch's global one).

        Returns:
            Samples of shape ``[num_samples, *sample_shape]``, on the model's device and in its dtype. Gradients
            flow to the parameters unless called under ``torch.no_grad()``.

        Example:
            >>> from nf_kernels.flows import build_model
            >>> flow = build_model("glow", (2,), num_steps=1, hidden=8, num_classes=3)
            >>> flow.sample(4, torch.tensor(1), generator=torch.Generator().manual_seed(0)).shape
            torch.Size([4, 2])
        """
        z = self.base.sample(check_num_samples(num_samples), generator=generator)
        return self.inverse(z, context)[0]

    def extra_repr(self) -> str:
        return f"sample_shape={self.sample_shape}, memory_saving={self.memory_saving}, compiled={self.compiled}"


_EXCLUSIVE = (
    "memory-saving backprop and compile exclude each other: memory-saving backward rebuilds each layer's graph "
    "during backward, which a compiled graph cannot contain. Use one of them (memory_saving=True saves "
    "activation memory, compile=True time)"
)
