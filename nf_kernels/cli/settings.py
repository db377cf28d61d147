"""Every option of ``nf-kernels train``, declared once: its parser, help, default, and what it means for a run.

The parser (``train`` and the parts ``demo``, ``eval`` and ``sample`` reuse), the defaults, ``--resume``'s
checks and the :class:`nf_kernels.training.TrainConfig` are all made from :data:`TRAIN_OPTIONS`. An option that
fills a TrainConfig field takes that field's default, so the library and the command line cannot disagree. The
settings (``saved`` options) are stored in each checkpoint under ``"cli"``, by name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

from .._arguments import BACKEND_NAMES
from ..data import describe_choices
from ..data.registry import DEFAULT_FILE_LEVELS
from ..training import TrainConfig
from ..training.model_spec import MODEL_NAMES
from ..training.precision import PRECISIONS
from .errors import UsageError
from .options import Option
from .parsing import non_negative_float, non_negative_int, positive_float, positive_int

# --help sections, in the order they are shown
DATA, MODEL, WHERE, OPTIMIZATION, OUTPUTS = "data", "model", "where to run", "optimization", "outputs"
DEFAULT_STEPS = 2000  # when neither --steps nor --epochs is given (TrainConfig's own default is for library use)
_TRAIN_CONFIG_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}


def _setting(name: str, help: str, type: Callable[[str], Any] = str, default: Any = None, *, group: str,
             **more: Any) -> Option:  # fmt: skip
    """A setting of the run: saved in its checkpoint, so --resume can take it from there."""
    return Option(name, help, type, default, group, saved=True, **more)


def _config_setting(name: str, help: str, type: Callable[[str], Any] = str, *, field: str = "",
                    group: str = OPTIMIZATION, **more: Any) -> Option:  # fmt: skip
    """A setting that fills TrainConfig's ``field`` (by default the same name), with that field's default."""
    field = field or name
    return _setting(name, help, type, _TRAIN_CONFIG_DEFAULTS[field], group=group, config_field=field, **more)


# Model sizes a user can set; each is passed to nf_kernels.flows.build_model only when given (and an error where the
# model does not have it: nf_kernels.training.model_spec.sizes_used).
_SIZES = {
    "hidden": "conditioner width (hidden units or channels)",
    "num_layers": "couplings of nice, or of realnvp on vectors",
    "num_scales": "scales of an image model (realnvp, glow, nsf)",
    "num_steps": "steps per scale (realnvp, glow, nsf; steps of a vector glow or nsf)",
    "bins": "spline bins of nsf",
    "depth": "hidden layers / residual blocks per conditioner",
}
SIZE_OPTIONS = tuple(_SIZES)

BACKEND = _setting("backend", "coupling kernels: 'auto' picks the fastest fused backend available, 'reference' is "
                   "plain PyTorch (env NF_KERNELS_BACKEND overrides 'auto')", default="auto", group=WHERE,
                   choices=BACKEND_NAMES)  # fmt: skip
DEVICE = _setting("device", "'auto' (the GPU if there is one), 'cpu', 'cuda' or 'cuda:N'", default="auto", group=WHERE)
RUNTIME_OPTIONS = (BACKEND, DEVICE)  # where a command runs: train, and eval and sample for a trained run

# No default of its own: DEFAULT_STEPS applies when --epochs is not given either (train.resolve_settings).
STEPS = _setting("steps", f"optimizer steps [{DEFAULT_STEPS}]", positive_int, group=OPTIMIZATION, exclusive="length",
                 config_field="steps")  # fmt: skip
OUT = Option("out", "run directory [runs/<data>-<model>]", Path, group=OUTPUTS)
NO_PROGRESS = Option("no_progress", "no progress bar (metrics are still written)", bool, group=OUTPUTS)
THREADS = Option("threads", "CPU threads per process [torch's default; 1 under torchrun]", positive_int, group=OUTPUTS)

TRAIN_OPTIONS: tuple[Option, ...] = (
    _setting("data", describe_choices(), default="moons", group=DATA, identity=True),
    _setting("data_seed", "seed of the toy points and of the fixed train/test split", int, 0, group=DATA,
             identity=True),  # fmt: skip
    _setting("levels", f"grey levels of integer user data [{DEFAULT_FILE_LEVELS}]", positive_int, group=DATA,
             identity=True),  # fmt: skip
    _setting("model", "flow architecture", default="realnvp", group=MODEL, choices=MODEL_NAMES, identity=True),
    *(_setting(name, f"{text} [model default]", positive_int, group=MODEL, metavar="N", identity=True)
      for name, text in _SIZES.items()),  # fmt: skip
    _config_setting("conditional", "class-conditional model, labels as context (data with labels: digits)", bool,
                    group=MODEL, identity=True),  # fmt: skip
    _setting("memory_saving", "memory-saving backprop: keep no activations, rebuild them by inversion", bool,
             False, group=MODEL, exclusive="backprop"),  # fmt: skip
    _setting("compile", "compile the flow with torch.compile (one graph, the fused ops inside; the first steps "
             "wait for it)", bool, False, group=MODEL, exclusive="backprop"),  # fmt: skip
    _setting("recompute_conditioner", "each coupling keeps only its input and reruns its conditioner in backward "
             "(a fraction of the standard step's activations, one conditioner forward more a coupling)", bool, False,
             group=MODEL, exclusive="backprop"),  # fmt: skip
    *RUNTIME_OPTIONS,
    _config_setting("dtype", "fp32; bf16: autocast of the forward pass; fp64: float64 weights and data",
                    choices=tuple(PRECISIONS)),  # fmt: skip
    _config_setting("batch_size", "global batch size", positive_int, identity=True),
    STEPS,
    _config_setting("epochs", "passes over the training set, instead of --steps", positive_int, exclusive="length"),
    _config_setting("lr", "peak learning rate (Adam)", positive_float),
    _config_setting("warmup", "linear warm-up steps", non_negative_int, field="warmup_steps"),
    _config_setting("final_lr_ratio", "cosine decay ends at lr times this", non_negative_float),
    _config_setting("weight_decay", "Adam weight decay", non_negative_float),
    _config_setting("clip_grad", "max gradient norm, 0: off", non_negative_float),
    _config_setting("seed", "seed of the model init and the batch order", int, identity=True),
    OUT,
    Option("resume", "continue the run in --out from its checkpoint", bool, group=OUTPUTS),
    Option("overwrite", "start afresh: the run in --out is deleted first (only if all it holds is training outputs)",
           bool, group=OUTPUTS),  # fmt: skip
    _config_setting("log_every", "steps between metric lines", positive_int, group=OUTPUTS),
    _config_setting("eval_every", "steps between test evaluations, 0: at the end", non_negative_int, group=OUTPUTS),
    _config_setting("checkpoint_every", "steps between checkpoints, 0: at the end", non_negative_int, group=OUTPUTS),
    _setting("plot_samples", "samples drawn for the final plot, 0: no plots", non_negative_int, 64, group=OUTPUTS),
    NO_PROGRESS,
    THREADS,
)
SETTINGS = tuple(option for option in TRAIN_OPTIONS if option.saved)
# What makes a run what it is: with --resume, giving a different value is an error, not a silent change.
IDENTITY = tuple(option.name for option in SETTINGS if option.identity)


def default_settings(**chosen: Any) -> dict[str, Any]:
    """Every setting of a training run at its default, except those in ``chosen`` (which must be settings)."""
    defaults = {option.name: option.default for option in SETTINGS}
    unknown = sorted(set(chosen) - set(defaults))
    if unknown:
        raise TypeError(f"not settings of a training run: {', '.join(unknown)}")
    return {**defaults, **chosen}


def train_config(settings: dict[str, Any], *, progress: bool) -> TrainConfig:
    """The TrainConfig of resolved ``settings``: each setting with a ``config_field`` fills that field."""
    fields = {option.config_field: settings[option.name] for option in SETTINGS if option.config_field}
    return TrainConfig(**fields, progress=progress)


def chosen_sizes(settings: dict[str, Any]) -> dict[str, Any]:
    """The model sizes set explicitly (the others stay at the builder's defaults)."""
    return {name: settings[name] for name in SIZE_OPTIONS if settings.get(name) is not None}


def check_backend(backend: str, device: torch.device) -> None:
    """Refuse, before any work, a backend (or an ``NF_KERNELS_BACKEND``) that cannot run on ``device``.

    The op layer raises the SPEC's RuntimeError or ValueError for it at the first coupling call; on the command
    line that is the user's choice to change, so it becomes a :class:`UsageError` with the same message.
    """
    from .._dispatch import resolve_backend  # loads the backends: only once a command runs

    try:
        resolve_backend(backend, device)
    except (RuntimeError, ValueError) as error:
        raise UsageError(str(error)) from error
