"""``nf-kernels sample``: draw from a trained flow into a picture (.png) or a tensor file (.npy, .pt)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..training.plots import save_density_plot, save_image_grid, to_displayable
from .errors import UsageError
from .options import add_options
from .parsing import HelpFormatter, positive_int, say
from .runs import LoadedRun, flow_device, open_run
from .settings import RUNTIME_OPTIONS

DESCRIPTION = """\
Draw samples from a trained flow. A .png gets a sample grid (images) or the density with the samples over the
test data (2-D); a .npy or .pt file gets the raw samples (images as integer grey levels).

examples:
  nf-kernels sample runs/digits-realnvp -n 100 --out digits.png
  nf-kernels sample runs/moons-realnvp -n 5000 --out moons.npy --seed 3
"""
SUFFIXES = (".png", ".npy", ".pt")


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("sample", help="draw samples from a checkpoint", description=DESCRIPTION,
                                    formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("run", type=Path, help="a run directory (its checkpoint.pt) or a checkpoint file")
    parser.add_argument("-n", "--num-samples", type=positive_int, default=64, help="how many samples")
    parser.add_argument("--out", type=Path, default=None, help="output .png, .npy or .pt [<run>/samples-<step>.png]")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--label", type=int, default=None, help="class to draw (class-conditional models)")
    add_options(parser, RUNTIME_OPTIONS)
    parser.set_defaults(run_command=run_sample)


def _labels(run: LoadedRun, label: Optional[int], count: int) -> Optional[torch.Tensor]:
    classes = run.spec.num_classes
    if classes is None:
        if label is not None:
            raise UsageError("--label needs a class-conditional model (trained with --conditional)")
        return None
    if label is not None and not 0 <= label < classes:
        raise UsageError(f"--label must be in [0, {classes}), got {label}")
    labels = torch.full((count,), label) if label is not None else torch.arange(count) % classes
    return labels.to(flow_device(run.flow))


def write_samples(run: LoadedRun, samples: torch.Tensor, out: Path) -> Path:
    data = run.data
    if out.suffix == ".png":
        if data.is_image and data.discrete:
            return save_image_grid(to_displayable(samples, data.levels), out)
        if data.sample_shape == (2,):
            return save_density_plot(run.flow, data.test, samples, out)
        raise UsageError(f"a .png needs image or 2-D data; {data.name} samples have shape {data.sample_shape}: "
                         f"write a .npy or .pt instead")  # fmt: skip
    if data.discrete:  # back to the integer grey levels the data came in
        samples = (samples * data.levels).floor().clamp(0, data.levels - 1).to(torch.uint8 if data.levels <= 256 else torch.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, samples.numpy())
    else:
        torch.save(samples, out)
    return out


def run_sample(args: argparse.Namespace) -> int:
    out = args.out
    if out is not None and out.suffix not in SUFFIXES:
        raise UsageError(f"--out must end in {', '.join(SUFFIXES)}, got {out}")
    run = open_run(args.run, backend=args.backend, device=args.device)
    out = out or run.directory / f"samples-{run.step}.png"
    generator = torch.Generator(device=flow_device(run.flow)).manual_seed(args.seed)
    with torch.no_grad():
        samples = run.flow.sample(args.num_samples, _labels(run, args.label, args.num_samples), generator=generator)
    written = write_samples(run, samples.float().cpu(), out)
    say(f"{args.num_samples} samples of {run.spec.describe()} (step {run.step}) -> {written}")
    return 0
