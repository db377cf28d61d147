"""Options several subcommands share: where to run (backend, device) and how big the model is."""

from __future__ import annotations

import argparse

from .._arguments import BACKEND_NAMES
from ..training.model_spec import MODEL_NAMES
from .parsing import positive_int

# Model sizes a user can set; each is passed to nf_kernels.flows.build_model only when given (and an error where the
# model does not have it: nf_kernels.training.model_spec.sizes_used).
SIZE_OPTIONS = {
    "hidden": "conditioner width (hidden units or channels)",
    "num_layers": "couplings of nice, or of realnvp on vectors",
    "num_scales": "scales of an image model (realnvp, glow)",
    "num_steps": "steps per scale (realnvp, glow; steps of a vector glow)",
    "depth": "hidden layers / residual blocks per conditioner",
}


def add_runtime_options(parser: argparse.ArgumentParser, *, with_defaults: bool = True) -> None:
    """``--backend`` and ``--device``; without defaults (None) when the value may come from a checkpoint."""
    group = parser.add_argument_group("where to run")
    group.add_argument("--backend", choices=BACKEND_NAMES, default="auto" if with_defaults else None,
                       help="coupling kernels: 'auto' picks the fastest fused backend available, 'reference' is "
                            "plain PyTorch (env NF_KERNELS_BACKEND overrides 'auto') [auto]")  # fmt: skip
    group.add_argument("--device", default="auto" if with_defaults else None,
                       help="'auto' (the GPU if there is one), 'cpu', 'cuda' or 'cuda:N' [auto]")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", choices=MODEL_NAMES, default=None, help="flow architecture [realnvp]")
    for name, text in SIZE_OPTIONS.items():
        group.add_argument(f"--{name.replace('_', '-')}", type=positive_int, default=None, metavar="N",
                           help=f"{text} [model default]")  # fmt: skip
    group.add_argument("--conditional", action="store_true", default=None,
                       help="class-conditional model, labels as context (data with labels: digits)")  # fmt: skip
    group.add_argument("--memory-saving", action="store_true", default=None,
                       help="memory-saving backprop: keep no activations, rebuild them by inversion")  # fmt: skip


def chosen_sizes(settings: dict) -> dict:
    """The model sizes set explicitly (the others stay at the builder's defaults)."""
    return {name: settings[name] for name in SIZE_OPTIONS if settings.get(name) is not None}
