"""``nf-kernels demo``: the README's first command. A few minutes on a laptop CPU, end to end.

Trains a small RealNVP on the bundled 8x8 digits, reports its test bits/dim next to a per-pixel baseline,
writes a sample grid, and times the fused coupling ops against the reference on this machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..training.baselines import independent_pixels_bits_per_dim
from .bench import speed_summary
from .options import Option, add_options
from .parsing import HelpFormatter, say
from .run_directory import claim_run_directory
from .settings import BACKEND, NO_PROGRESS, OUT, STEPS, THREADS, default_settings
from .train import train

DESCRIPTION = """\
Train a small RealNVP on scikit-learn's 8x8 digits (about 2 minutes on 2 CPU cores), report the test bits/dim
next to an independent per-pixel baseline, write a sample grid, and print a fused-vs-reference speed summary
of the coupling ops on this machine.

example:
  nf-kernels demo --out runs/demo
"""

# Small enough for a 2-core CPU in about two minutes, big enough to beat the per-pixel baseline clearly.
DEMO_SETTINGS = {
    "data": "digits", "model": "realnvp", "num_scales": 2, "num_steps": 2, "hidden": 32, "depth": 1,
    "batch_size": 128, "lr": 5e-3, "warmup": 50, "eval_every": 0, "checkpoint_every": 0, "log_every": 20,
}  # fmt: skip
DEMO_STEPS = 1000

# train's options where the demo has them too, with the demo's defaults
DEMO_OPTIONS = (
    OUT.but(default=Path("runs") / "demo", help="run directory (overwritten)"),
    STEPS.but(default=DEMO_STEPS, help="training steps"),
    BACKEND,
    THREADS.but(default=1, help="CPU threads for training: the demo's small convolutions gain little from more, "
                "and lose badly when other programs share the cores"),  # fmt: skip
    Option("no_bench", "skip the speed summary", bool),
    NO_PROGRESS.but(help="no progress bar"),
)


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("demo", help="train RealNVP on digits, sample, and time the kernels (minutes)",
                                    description=DESCRIPTION, formatter_class=HelpFormatter)  # fmt: skip
    add_options(parser, DEMO_OPTIONS, grouped=False)
    parser.set_defaults(run_command=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    settings = default_settings(**DEMO_SETTINGS, steps=args.steps, backend=args.backend)
    with claim_run_directory(args.out, overwrite=True):
        result = train(settings, args.out, progress=not args.no_progress)
    from ..data import load_dataset

    baseline = independent_pixels_bits_per_dim(load_dataset("digits"))
    say(f"\ndigits test bits/dim: RealNVP {result.test_metric:.3f}, independent per-pixel baseline {baseline:.3f} "
        f"(uniform: 4.087)")  # fmt: skip
    if not args.no_bench:
        from ..training.distributed import choose_device

        say("\ncoupling ops on this machine, median time per call (fused vs the eager reference):")
        say(speed_summary(choose_device("auto")))
    say(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return 0
