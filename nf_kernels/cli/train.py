"""``nf-kernels train``: fit a flow to a data set, with checkpoints, metrics, plots and optional torchrun/DDP."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Optional

import torch

from ..cpu_memory import keep_freed_cpu_memory
from ..data import FlowDataset, load_dataset
from ..training import Trainer, TrainResult, init_distributed, load_checkpoint, shutdown_distributed
from ..training.distributed import will_be_main
from ..training.metrics import read_metrics
from ..training.model_spec import ModelSpec, data_kind, sizes_used
from ..training.plots import (
    PlottingUnavailable, save_density_plot, save_image_grid, save_learning_curves, to_displayable,
)  # fmt: skip
from .errors import UsageError
from .options import add_options, flag, given_settings
from .parsing import HelpFormatter, say, warn
from .run_directory import claim_run_directory
from .runs import CHECKPOINT_NAME
from .settings import (
    DEFAULT_STEPS, IDENTITY, SIZE_OPTIONS, TRAIN_OPTIONS, check_backend, chosen_sizes, default_settings, train_config,
)  # fmt: skip

DESCRIPTION = """\
Train a normalizing flow. Outputs go to --out: checkpoint.pt (every --checkpoint-every steps, written
atomically), metrics.jsonl (one JSON line per log step), curves.png, and samples.png (images) or
density.png (2-D data). --batch-size is the global batch: under torchrun it is split across processes.

examples:
  nf-kernels train --data moons --steps 2000
  nf-kernels train --data digits --model realnvp --steps 3000 --batch-size 128 --dtype bf16
  nf-kernels train --out runs/digits-realnvp --resume --steps 5000     # continue (and extend) a run
  torchrun --nproc_per_node=2 -m nf_kernels train --data digits --steps 1000
"""


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("train", help="train a flow on a data set", description=DESCRIPTION,
                                    formatter_class=HelpFormatter)  # fmt: skip
    add_options(parser, TRAIN_OPTIONS, resumable=True)
    parser.set_defaults(run_command=run_train)


def run_directory(args: argparse.Namespace) -> Path:
    """``--out``, or ``runs/<data>-<model>`` from the data and model on the command line."""
    if args.out is not None:
        return args.out
    settings = {**default_settings(), **given_settings(args, TRAIN_OPTIONS)}
    return Path("runs") / f"{Path(str(settings['data'])).stem}-{settings['model']}"


def resolve_settings(args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], Optional[int]]:
    """Every setting of the run in ``out`` (given on the command line, else saved in the checkpoint with --resume,
    else the default), and the checkpoint's step with --resume (None for a fresh run)."""
    given = given_settings(args, TRAIN_OPTIONS)
    checkpoint = out / CHECKPOINT_NAME
    resume_step = None
    if not args.resume:
        if checkpoint.exists() and not args.overwrite:
            raise UsageError(f"{out} already holds a run: add --resume to continue it, --overwrite to start afresh, "
                             f"or choose another --out")  # fmt: skip
        settings = {**default_settings(), **given}
    else:
        if not checkpoint.exists():
            raise UsageError(f"nothing to resume: no {CHECKPOINT_NAME} in {out} (give the run's --out)")
        payload = load_checkpoint(checkpoint)
        saved, resume_step = payload.get("cli"), int(payload["step"])
        if saved is None:
            raise UsageError(f"{checkpoint} was not written by 'nf-kernels train'")
        clashes = [f"{flag(k)} {given[k]} (the run has {saved.get(k)})" for k in IDENTITY
                   if k in given and given[k] != saved.get(k)]  # fmt: skip
        if clashes:
            raise UsageError(f"the checkpoint in {out} is from a different run: {'; '.join(clashes)}")
        settings = {**default_settings(), **saved, **given}
        if "steps" in given or "epochs" in given:  # a new length replaces the old one, whichever it was
            settings["epochs" if "steps" in given else "steps"] = None
    if settings["steps"] is None and settings["epochs"] is None:
        settings["steps"] = DEFAULT_STEPS
    return settings, resume_step


def model_spec(settings: dict[str, Any], data: FlowDataset) -> ModelSpec:
    if settings["conditional"] and not data.num_classes:
        raise UsageError(f"--conditional needs labelled data; {data.name} has no labels")
    sizes, used = chosen_sizes(settings), sizes_used(settings["model"], data.sample_shape)
    used = [name for name in used if name in SIZE_OPTIONS]  # the ones this command line has
    unused = [name for name in sizes if name not in used]
    if unused:
        raise UsageError(f"{', '.join(map(flag, unused))}: not a size of {settings['model']} on "
                         f"{data_kind(data.sample_shape)} ({data.name}); its sizes are "
                         f"{', '.join(map(flag, used))}")  # fmt: skip
    return ModelSpec(settings["model"], data.sample_shape, sizes, data.num_classes if settings["conditional"] else None)


def _steps(count: int) -> str:
    return f"{count} step" + ("" if count == 1 else "s")


def write_plots(flow: torch.nn.Module, data: FlowDataset, out: Path, count: int, metrics: Optional[Path]) -> list[Path]:
    """The end-of-run pictures: sample grid (images) or density + samples (2-D), and the learning curves."""
    written = []
    if metrics is not None:
        written.append(save_learning_curves(read_metrics(metrics), "bits_per_dim" if data.discrete else "nll", out / "curves.png"))
    if count == 0:
        return written
    flow.eval()
    device = next(flow.parameters()).device
    labels = torch.arange(count, device=device) % data.num_classes if getattr(flow, "context_encoder", None) else None
    with torch.no_grad():
        samples = flow.sample(count, labels).cpu()
    if data.is_image and data.discrete:
        written.append(save_image_grid(to_displayable(samples, data.levels), out / "samples.png"))
    elif data.sample_shape == (2,):
        with torch.no_grad():
            more = flow.sample(max(count, 2000)).cpu()
        written.append(save_density_plot(flow, data.test, more, out / "density.png"))
    return written


def train(settings: dict[str, Any], out: Path, *, resume_step: Optional[int] = None,
          progress: bool = True) -> Optional[TrainResult]:  # fmt: skip
    """Run one training job with resolved settings, continuing the checkpoint at ``resume_step`` if given; None
    when that run is already complete. Under torchrun every process calls this. The caller holds ``out``."""
    context = init_distributed(settings["device"])
    if context.device.type == "cpu":
        keep_freed_cpu_memory()  # steps reuse their memory instead of page-faulting it in (nf_kernels/cpu_memory.py)
    try:
        check_backend(settings["backend"], context.device)
        data = load_dataset(settings["data"], data_seed=settings["data_seed"], levels=settings["levels"])
        spec = model_spec(settings, data)
        torch.manual_seed(settings["seed"])  # the same initial weights for the same seed, on every rank
        flow = spec.build(backend=settings["backend"], memory_saving=settings["memory_saving"],
                          compile=settings["compile"], recompute_conditioner=settings["recompute_conditioner"])  # fmt: skip
        trainer = Trainer(flow, data, train_config(settings, progress=progress), out_dir=out, context=context,
                          checkpoint_extra={"model_spec": spec.to_dict(), "cli": settings})  # fmt: skip
        if resume_step is not None and resume_step >= trainer.total_steps:
            _nothing_to_do(settings, out, resume_step, trainer.total_steps, context.is_main)
            return None
        if context.is_main:
            say(f"training {spec.describe()} on {data!r}, {trainer.total_steps} steps, "
                f"backend {settings['backend']}, {context!r}")  # fmt: skip
            if settings["warmup"] >= trainer.total_steps:
                warn(f"the warm-up (--warmup {settings['warmup']}) lasts the whole run "
                     f"({_steps(trainer.total_steps)}): the learning rate climbs throughout and never decays; "
                     f"give a --warmup below {trainer.total_steps}")  # fmt: skip
        result = trainer.fit(resume=resume_step is not None)
        if context.is_main:
            try:
                plots = write_plots(flow, data, out, settings["plot_samples"], result.metrics)
            except PlottingUnavailable as error:  # the run itself is complete: say why there are no pictures
                say(f"no plots: {error}")
                plots = []
            report(result, plots)
        return result
    finally:
        shutdown_distributed(context)


def _nothing_to_do(settings: dict[str, Any], out: Path, done: int, total: int, is_main: bool) -> None:
    """A resumed run that is already as long as asked: say so, or refuse to shorten it."""
    if done > total:
        asked = (f"--steps {total}" if settings["steps"] is not None
                 else f"--epochs {settings['epochs']} ({total} steps)")  # fmt: skip
        raise UsageError(f"{asked} is fewer than the {done} steps the run in {out} has done: a run cannot be "
                         f"shortened; give more to extend it")  # fmt: skip
    if is_main:
        say(f"nothing to do: the run in {out} is complete ({done} of {total} steps); give a larger --steps or "
            f"--epochs to extend it")  # fmt: skip


def report(result: TrainResult, plots: list[Path]) -> None:
    name = "bits/dim" if result.metric == "bits_per_dim" else "NLL (nats)"
    say(f"step {result.step}: test {name} {result.test_metric:.4f}, train {name} {result.train_loss:.4f}, "
        f"{result.steps_per_s:.2f} steps/s")  # fmt: skip
    say("outputs:")
    for label, path in [("checkpoint", result.checkpoint), ("metrics", result.metrics)] + [("plot", p) for p in plots]:
        say(f"  {label:<10} {path}")


def run_train(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other: choose one")
    out = run_directory(args)
    # Rank 0 writes, so rank 0 holds the directory: from before the checkpoint is read to after the last write.
    with claim_run_directory(out, overwrite=args.overwrite) if will_be_main() else contextlib.nullcontext():
        settings, resume_step = resolve_settings(args, out)
        if args.threads:
            torch.set_num_threads(args.threads)
        train(settings, out, resume_step=resume_step, progress=not args.no_progress)
    return 0
