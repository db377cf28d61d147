"""Normalizing-flow layers and models on the fused coupling ops (SPEC section 5).

    >>> import torch
    >>> from nf_kernels.flows import build_model, bits_per_dim, dequantize
    >>> flow = build_model("realnvp", (1, 8, 8), num_steps=1, hidden=8, depth=1)
    >>> x = dequantize(torch.randint(0, 256, (4, 1, 8, 8)), 256)
    >>> bits_per_dim(flow.log_prob(x), num_dims=64).shape
    torch.Size([4])

See docs/flows.md.
"""

from .actnorm import ActNorm
from .base import FlowLayer
from .conditioners import MLP, ResNetConditioner
from .conv1x1 import Invertible1x1Conv
from .coupling import AdditiveCoupling, AffineCoupling
from .dequantize import bits_per_dim, dequantize
from .distributions import StandardLogistic, StandardNormal
from .flow import Flow
from .labels import LabelEmbedding
from .models import MODEL_SIZES, MODELS, build_model, glow, nice, nsf, realnvp, sizes_used
from .permutations import Permutation, RandomPermutation, ReversePermutation
from .scaling import Scaling
from .spline_coupling import SplineCoupling
from .split import MultiScaleSplit
from .squeeze import Squeeze
from .transforms import FlowTransform

__all__ = [
    "ActNorm", "ActivationMemory", "AdditiveCoupling", "AffineCoupling", "Flow", "FlowLayer", "FlowTransform",
    "Invertible1x1Conv", "LabelEmbedding", "MLP", "MODELS", "MODEL_SIZES", "MultiScaleSplit", "Permutation",
    "RandomPermutation", "ResNetConditioner", "ReversePermutation", "Scaling", "SplineCoupling", "Squeeze", "StandardLogistic",
    "StandardNormal", "activation_memory", "bits_per_dim", "build_model", "dequantize", "glow", "nice", "nsf", "realnvp",
    "sizes_used",
]  # fmt: skip


def __getattr__(name: str):
    # The memory tools are loaded on first use: they live in the module `python -m nf_kernels.flows.memory_report`
    # runs, and a module the package had already imported would make runpy warn (and run its code twice).
    if name in ("ActivationMemory", "activation_memory"):
        from . import memory_report

        return getattr(memory_report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
