"""Activation memory of a 32-coupling RealNVP on images, standard backprop vs memory-saving backprop.

    python -m nf_kernels.flows.memory_report [--shape 3 32 32] [--batch 16] [--device cuda]
"""

from __future__ import annotations

import argparse

import torch

from .memory import activation_memory
from .models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
