"""``nf-kernels train``: fit a flow to a data set, with checkpoints, metrics, plots and optional torchrun/DDP."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Optional

import torch

from ..data import FlowDataset, describe_choices, load_dataset
from ..training import (
    Trainer, TrainConfig, TrainResult, init_distributed, load_checkpoint, shutdown_distributed,
)  # fmt: skip
from ..training.distributed import will_be_main
from ..training.metrics import read_metrics
from ..training.model_spec import ModelSpec, data_kind, sizes_used
from ..training.precision import PRECISIONS
from ..training.plots import (
    PlottingUnavailable, save_density_plot, save_image_grid, save_learning_curves, to_displayable,
)  # fmt: skip
from .errors import UsageError
from .options import SIZE_OPTIONS, add_model_options, add_runtime_options, chosen_sizes
from .parsing import HelpFormatter, non_negative_float, non_negative_int, positive_float, positive_int, say, warn
from .run_directory import claim_run_directory
from .runs import CHECKPOINT_NAME

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

# Defaults of every setting. The parser's own defaults are None, so that with --resume a setting the user did not
# give comes from the checkpoint, and only then from here.
DEFAULTS: dict[str, Any] = {
    "data": "moons", "data_seed": 0, "levels": None,
    "model": "realnvp", "hidden": None, "num_layers": None, "num_scales": None, "num_steps": None, "depth": None,
    "conditional": False, "memory_saving": False, "backend": "auto", "device": "auto", "dtype": "fp32",
    "batch_size": 256, "steps": None, "epochs": None, "lr": 1e-3, "warmup": 100, "final_lr_ratio": 0.01,
    "weight_decay": 0.0, "clip_grad": 5.0, "seed": 0,
    "log_every": 10, "eval_every": 500, "checkpoint_every": 500, "plot_samples": 64,
}  # fmt: skip
DEFAULT_STEPS = 2000
# What makes a run what it is: with --resume, giving a different value is an error, not a silent change.
IDENTITY = ("data", "data_seed", "levels", "model", "hidden", "num_layers", "num_scales", "num_steps", "depth",
            "conditional", "seed", "batch_size")  # fmt: skip


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("train", help="train a flow on a data set", description=DESCRIPTION,
                                    formatter_class=HelpFormatter)  # fmt: skip
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=None, help=f"{describe_choices()} [moons]")
    data.add_argument("--data-seed", type=int, default=None, help="seed of the toy points and of the fixed train/test split [0]")
    data.add_argument("--levels", type=positive_int, default=None, help="grey levels of integer user data [256]")
    add_model_options(parser)
    add_runtime_options(parser, with_defaults=False)
    optim = parser.add_argument_group("optimization")
    optim.add_argument("--dtype", choices=tuple(PRECISIONS), default=None,
                       help="fp32; bf16: autocast of the forward pass; fp64: float64 weights and data [fp32]")  # fmt: skip
    optim.add_argument("--batch-size", type=positive_int, default=None, help="global batch size [256]")
    length = optim.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, default=None, help=f"optimizer steps [{DEFAULT_STEPS}]")
    length.add_argument("--epochs", type=positive_int, default=None, help="passes over the training set, instead of --steps")
    optim.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (Adam) [1e-3]")
    optim.add_argument("--warmup", type=non_negative_int, default=None, help="linear warm-up steps [100]")
    optim.add_argument("--final-lr-ratio", type=non_negative_float, default=None,
                       help="cosine decay ends at lr times this [0.01]")  # fmt: skip
    optim.add_argument("--weight-decay", type=non_negative_float, default=None, help="Adam weight decay [0]")
    optim.add_argument("--clip-grad", type=non_negative_float, default=None, help="max gradient norm, 0: off [5]")
    optim.add_argument("--seed", type=int, default=None, help="seed of the model init and the batch order [0]")
    run = parser.add_argument_group("outputs")
    run.add_argument("--out", type=Path, default=None, help="run directory [runs/<data>-<model>]")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="start afresh: the run in --out is deleted first (only if all it holds is training outputs)")
    run.add_argument("--log-every", type=positive_int, default=None, help="steps between metric lines [10]")
    run.add_argument("--eval-every", type=non_negative_int, default=None, help="steps between test evaluations, 0: at the end [500]")
    run.add_argument("--checkpoint-every", type=non_negative_int, default=None, help="steps between checkpoints, 0: at the end [500]")
    run.add_argument("--plot-samples", type=non_negative_int, default=None, help="samples drawn for the final plot, 0: no plots [64]")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (metrics are still written)")
    run.add_argument("--threads", type=positive_int, default=None,
                     help="CPU threads per process [torch's default; 1 under torchrun]")  # fmt: skip
    parser.set_defaults(run_command=run_train)


def _given(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in DEFAULTS and v is not None}


def run_directory(args: argparse.Namespace) -> Path:
    """``--out``, or ``runs/<data>-<model>`` from the data and model on the command line."""
    if args.out is not None:
        return args.out
    settings = {**DEFAULTS, **_given(args)}
    return Path("runs") / f"{Path(str(settings['data'])).stem}-{settings['model']}"


def resolve_settings(args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], Optional[int]]:
    """Every setting of the run in ``out`` (given on the command line, else saved in the checkpoint with --resume,
    else the default), and the checkpoint's step with --resume (None for a fresh run)."""
    given = _given(args)
    checkpoint = out / CHECKPOINT_NAME
    resume_step = None
    if not args.resume:
        if checkpoint.exists() and not args.overwrite:
            raise UsageError(f"{out} already holds a run: add --resume to continue it, --overwrite to start afresh, "
                             f"or choose another --out")  # fmt: skip
        settings = {**DEFAULTS, **given}
    else:
        if not checkpoint.exists():
            raise UsageError(f"nothing to resume: no {CHECKPOINT_NAME} in {out} (give the run's --out)")
        payload = load_checkpoint(checkpoint)
        saved, resume_step = payload.get("cli"), int(payload["step"])
        if saved is None:
            raise UsageError(f"{checkpoint} was not written by 'nf-kernels train'")
        clashes = [f"{_option(k)} {given[k]} (the run has {saved.get(k)})" for k in IDENTITY
                   if k in given and given[k] != saved.get(k)]  # fmt: skip
        if clashes:
            raise UsageError(f"the checkpoint in {out} is from a different run: {'; '.join(clashes)}")
        settings = {**DEFAULTS, **saved, **given}
        if "steps" in given or "epochs" in given:  # a new length replaces the old one, whichever it was
            settings["epochs" if "steps" in given else "steps"] = None
    if settings["steps"] is None and settings["epochs"] is None:
        settings["steps"] = DEFAULT_STEPS
    return settings, resume_step


def _config(settings: dict[str, Any], progress: bool) -> TrainConfig:
    return TrainConfig(
        steps=settings["steps"], epochs=settings["epochs"], batch_size=settings["batch_size"], lr=settings["lr"],
        warmup_steps=settings["warmup"], final_lr_ratio=settings["final_lr_ratio"],
        weight_decay=settings["weight_decay"], clip_grad=settings["clip_grad"], dtype=settings["dtype"],
        seed=settings["seed"], log_every=settings["log_every"], eval_every=settings["eval_every"],
        checkpoint_every=settings["checkpoint_every"], conditional=settings["conditional"], progress=progress,
    )  # fmt: skip


def model_spec(settings: dict[str, Any], data: FlowDataset) -> ModelSpec:
    if settings["conditional"] and not data.num_classes:
        raise UsageError(f"--conditional needs labelled data; {data.name} has no labels")
    sizes, used = chosen_sizes(settings), sizes_used(settings["model"], data.sample_shape)
    used = [name for name in used if name in SIZE_OPTIONS]  # the ones this command line has
    unused = [name for name in sizes if name not in used]
    if unused:
        raise UsageError(f"{', '.join(_option(name) for name in unused)}: not a size of {settings['model']} on "
                         f"{data_kind(data.sample_shape)} ({data.name}); its sizes are "
                         f"{', '.join(map(_option, used))}")  # fmt: skip
    return ModelSpec(settings["model"], data.sample_shape, sizes, data.num_classes if settings["conditional"] else None)


def _steps(count: int) -> str:
    return f"{count} step" + ("" if count == 1 else "s")


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}"


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
    try:
        data = load_dataset(settings["data"], data_seed=settings["data_seed"], levels=settings["levels"])
        spec = model_spec(settings, data)
        torch.manual_seed(settings["seed"])  # the same initial weights for the same seed, on every rank
        flow = spec.build(backend=settings["backend"], memory_saving=settings["memory_saving"])
        trainer = Trainer(flow, data, _config(settings, progress), out_dir=out, context=context,
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
