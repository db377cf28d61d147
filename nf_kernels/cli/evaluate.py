"""``nf-kernels eval``: the test-set bits/dim (images) or NLL (2-D and other continuous data) of a checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..training import evaluate
from ..training.baselines import baseline_for
from .options import add_options
from .parsing import HelpFormatter, positive_int, say
from .runs import flow_device, open_run
from .settings import RUNTIME_OPTIONS

DESCRIPTION = """\
Evaluate a trained flow on its data set's fixed test split (the same split training reported on).

examples:
  nf-kernels eval runs/digits-realnvp
  nf-kernels eval runs/moons-realnvp/checkpoint.pt --baseline --json
"""


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("eval", help="test-set bits/dim or NLL of a checkpoint", description=DESCRIPTION,
                                    formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("run", type=Path, help="a run directory (its checkpoint.pt) or a checkpoint file")
    add_options(parser, RUNTIME_OPTIONS)
    parser.add_argument("--batch-size", type=positive_int, default=1024, help="evaluation batch size")
    parser.add_argument("--baseline", action="store_true",
                        help="also fit the simple baseline (per-pixel categorical / KDE) and report it")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run_command=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    run = open_run(args.run, backend=args.backend, device=args.device)
    conditional = run.spec.num_classes is not None
    value = evaluate(run.flow, run.data, batch_size=args.batch_size, device=flow_device(run.flow),
                     conditional=conditional, precision=run.precision)  # fmt: skip
    metric = "bits_per_dim" if run.data.discrete else "nll"
    record = {"checkpoint": str(run.path), "model": run.spec.name, "data": run.data.name, "step": run.step,
              "split": "test", metric: value}  # fmt: skip
    if args.baseline:
        record["baseline"], record[f"baseline_{metric}"] = baseline_for(run.data)
    if args.json:
        say(json.dumps(record))
        return 0
    unit = "bits/dim" if run.data.discrete else "NLL (nats)"
    say(f"{run.spec.describe()} at step {run.step}, {run.data.name} test split ({len(run.data.test)} samples)")
    say(f"  test {unit}: {value:.4f}")
    if args.baseline:
        say(f"  baseline ({record['baseline']}): {record[f'baseline_{metric}']:.4f}")
    return 0
