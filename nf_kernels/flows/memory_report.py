"""Activation memory: the bytes autograd keeps for backward, measured, and the report that compares the paths.

Activation memory is what autograd's saved tensors hold alive, so it is counted exactly where it is created:
a `torch.autograd.graph.saved_tensors_hooks` pair wraps every saved tensor in a handle that adds its storage's
bytes while alive (each storage once, however many nodes share it) and subtracts them when autograd frees it.
Parameters and buffers are not activations and are left out. This works on any device and needs no allocator
statistics. The standard path's peak is right after forward (backward only frees); memory-saving backprop
rebuilds one layer's graph at a time during backward, and those graphs are counted too, so `peak` is honest.

Run as a script, it prints the 32-coupling RealNVP comparison quoted in docs/flows.md::

    python -m nf_kernels.flows.memory_report [--shape 3 32 32] [--batch 16] [--hidden 32] [--device cuda]
                                             [--backend auto]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .models import build_model

_REPORT_DESCRIPTION = (
    "Activation memory of a 32-coupling RealNVP on images, standard backprop vs memory-saving backprop."
)


class _Ledger:
    """Live bytes of saved tensors, keyed by storage, with the peak seen."""

    def __init__(self, excluded_storages: set[int]):
        self.excluded = excluded_storages
        self.refcounts: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.current = self.peak = 0

    def pack(self, tensor: Tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.excluded or storage.nbytes() == 0:
            return tensor
        return _SavedHandle(self, key, storage.nbytes(), tensor)

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _SavedHandle) else packed

    def add(self, key: int, nbytes: int) -> None:
        if self.refcounts.get(key, 0) == 0:
            self.sizes[key] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        self.refcounts[key] = self.refcounts.get(key, 0) + 1

    def remove(self, key: int) -> None:
        self.refcounts[key] -= 1
        if self.refcounts[key] == 0:
            self.current -= self.sizes.pop(key)
            del self.refcounts[key]


class _SavedHandle:
    __slots__ = ("ledger", "key", "tensor")

    def __init__(self, ledger: _Ledger, key: int, nbytes: int, tensor: Tensor):
        self.ledger, self.key, self.tensor = ledger, key, tensor
        ledger.add(key, nbytes)

    def __del__(self):
        self.ledger.remove(self.key)


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes of activations autograd held during one training step, as :func:`activation_memory` measures them.

    Args:
        after_forward: bytes held right after the forward pass (int >= 0).
        peak: the most bytes held at once over forward and backward (int >= `after_forward`).

    Returns:
        ``str()`` gives both in MiB, as the report prints them.

    Example:
        >>> print(ActivationMemory(after_forward=2**20, peak=3 * 2**20))
        after forward 1.00 MiB, peak 3.00 MiB
    """

    after_forward: int
    peak: int

    def __str__(self) -> str:
        return f"after forward {self.after_forward / 2**20:.2f} MiB, peak {self.peak / 2**20:.2f} MiB"


def activation_memory(flow: nn.Module, x: Tensor, context: Optional[Tensor] = None) -> ActivationMemory:
    """Activation bytes of one training step of `flow` on `x`, with the loss ``-flow.log_prob(x, context).mean()``.

    Counts the storages of the tensors autograd saves for backward (parameters and buffers excluded), including
    those of the graphs memory-saving backprop rebuilds during backward. Gradients are computed with
    ``torch.autograd.grad``, so the parameters' ``.grad`` is left untouched.

    Args:
        flow: the model, a :class:`Flow` (anything with ``log_prob(x, context)`` and parameters); its
            `memory_saving` setting decides which path is measured.
        x: a batch of its data ``[B, *sample_shape]``, in its dtype and on its device.
        context: the conditioning, as for :meth:`Flow.log_prob`; default None.

    Returns:
        An :class:`ActivationMemory` with the bytes held after forward and at the peak.

    Example:
        >>> from nf_kernels.flows import build_model
        >>> flow = build_model("realnvp", (4,), hidden=8)
        >>> activation_memory(flow, torch.randn(16, 4)).after_forward > 0
        True
    """
    tensors = list(flow.parameters()) + list(flow.buffers())
    ledger = _Ledger({t.untyped_storage().data_ptr() for t in tensors})
    params = [p for p in flow.parameters() if p.requires_grad]
    # The hooks stay on during backward too: memory-saving backprop saves tensors there, in the graphs it rebuilds.
    with torch.autograd.graph.saved_tensors_hooks(ledger.pack, ledger.unpack):
        loss = -flow.log_prob(x, context).mean()
        after_forward = ledger.current
        torch.autograd.grad(loss, params, allow_unused=True)
    del loss
    return ActivationMemory(after_forward, ledger.peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=_REPORT_DESCRIPTION)
    parser.add_argument("--shape", type=int, nargs=3, default=(3, 32, 32), metavar=("C", "H", "W"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    # 32 couplings: 3 scales of (6 checkerboard + 6 channel) couplings, and 8 on the last scale.
    sizes = dict(num_scales=3, num_steps=6, final_steps=8, hidden=args.hidden, depth=1)
    torch.manual_seed(0)
    flow = build_model("realnvp", tuple(args.shape), backend=args.backend, **sizes).to(args.device)
    couplings = sum(type(m).__name__ == "AffineCoupling" for m in flow.modules())
    x = torch.rand(args.batch, *args.shape, device=args.device)
    results = {}
    for memory_saving in (False, True):
        flow.memory_saving = memory_saving
        results[memory_saving] = activation_memory(flow, x)
        print(f"RealNVP, {couplings} couplings, batch {args.batch}x{tuple(args.shape)}, "
              f"memory_saving={memory_saving}: {results[memory_saving]}")  # fmt: skip
    for field in ("after_forward", "peak"):
        ratio = getattr(results[True], field) / getattr(results[False], field)
        print(f"memory-saving / standard, {field}: {ratio:.1%}")


if __name__ == "__main__":
    main()
