"""``nf-kernels bench``: the short benchmark of the coupling ops (and models), from ``nf_kernels.benchmarking``.

The full tool with every knob is ``python benchmarks/run.py`` in a checkout; this is the installed, quick version.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from .._dispatch import why_unavailable
from ..benchmarking.op_runner import run_cases
from ..benchmarking.presets import PRESETS, preset, run_plan
from ..benchmarking.providers import available_providers
from ..benchmarking.report import format_summary
from ..training.distributed import choose_device
from .errors import UsageError
from .parsing import HelpFormatter, positive_float, positive_int, say

DESCRIPTION = """\
Time the fused coupling kernels against eager PyTorch and torch.compile of the reference, next to the copy
bandwidth measured in the same run (SPEC section 4), and print a summary with the speed targets.

examples:
  nf-kernels bench                       # the 'quick' preset: seconds
  nf-kernels bench --preset default --out bench-results
"""


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser("bench", help="short benchmark: fused vs eager vs torch.compile",
                                    description=DESCRIPTION, formatter_class=HelpFormatter)  # fmt: skip
    parser.add_argument("--preset", default="quick", help="quick, default, tiny or gpu-suite")
    parser.add_argument("--device", default="auto", help="'auto' (the GPU if there is one), 'cpu' or 'cuda'")
    parser.add_argument("--out", type=Path, default=None, help="also write markdown, JSON and plots to this folder")
    parser.add_argument("--time-limit", type=positive_float, default=None, metavar="S",
                        help="start no new op case after S seconds")  # fmt: skip
    parser.add_argument("--rounds", type=positive_int, default=None, metavar="N",
                        help="measure each case's providers in turn N times, report the median and the spread "
                        "[the preset's: 3 for quick and default]")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run_command=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}: valid choices are {', '.join(PRESETS)}")
    device = choose_device(args.device)
    plan = preset(args.preset, device.type)
    command = shlex.join(["nf-kernels", *sys.argv[1:]]) if sys.argv else "nf-kernels bench"
    run = run_plan(plan, device, time_limit_s=args.time_limit, rounds=args.rounds, progress=not args.no_progress,
                   out_dir=args.out, command=command,
                   on_start=lambda env: say(f"nf_kernels benchmarks on {env['device_name']}, preset {plan.name}"))
    say(format_summary(run.env, run.op_results, run.model_results, run.checks, run.overhead_results))
    for path in run.written:
        say(f"  wrote {path}")
    return 0


def speed_summary(device: torch.device, budget_seconds: float = 20.0) -> str:
    """A few lines: the fused coupling ops against eager PyTorch (the reference) on this machine.

    Used by ``demo``; the quick preset's cases with only the eager and fused providers (no torch.compile: its
    compile time would dominate a short demo).
    """
    fused = [name for name in available_providers(device) if name not in ("eager", "compile")]
    if not fused:
        reasons = "; ".join(f"{name}: {why_unavailable(name, device)}" for name in ("cpu", "cuda", "triton"))
        return f"no fused backend runs on this {device.type} machine, so there is nothing to compare ({reasons})"
    plan = preset("quick", device.type)
    results = run_cases(device, plan.cases, ["eager", *fused], False, budget=plan.budget, time_limit_s=budget_seconds)
    lines = []
    for case in dict.fromkeys(r.case for r in results):
        row = {r.provider: r for r in results if r.case == case}
        eager = row.get("eager")
        parts = [f"eager {eager.seconds * 1e3:.3g} ms" if eager and eager.seconds else "eager failed"]
        for name in fused:
            result = row.get(name)
            if result is None or not result.seconds:
                parts.append(f"{name} failed: {result.error if result else 'not run'}")
            else:
                speedup = f" ({result.speedup_vs_eager:.2f}x)" if result.speedup_vs_eager else ""
                parts.append(f"{name} {result.seconds * 1e3:.3g} ms{speedup}")
        lines.append(f"  {case.label():<48} " + ", ".join(parts))
    return "\n".join(lines)
