"""``nf-kernels bench``: the short benchmark of the coupling ops (and models), from ``nf_kernels.benchmarking``.

The full tool with every knob is ``python benchmarks/run.py`` in a checkout; this is the installed, quick version.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path
from typing import Any

import torch

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


def benchmarking() -> Any:
    """The benchmark library, or a clear error if this installation lacks it."""
    try:
        library = importlib.import_module("nf_kernels.benchmarking")
    except ImportError as error:
        raise UsageError(f"the benchmark library nf_kernels.benchmarking cannot be imported ({error}); "
                         f"reinstall nf_kernels") from None  # fmt: skip
    return library


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
    library = benchmarking()
    if args.preset not in library.PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}: valid choices are {', '.join(library.PRESETS)}")
    device = choose_device(args.device)
    plan = library.preset(args.preset, device.type)
    # Freed CPU memory stays mapped, so timings do not include page faults (as benchmarks/run.py does).
    kept = device.type == "cpu" and library.keep_freed_cpu_memory()
    env = library.environment(device)
    if kept:
        env = dict(env, cpu_malloc="freed memory kept (no mmap, no trim)")
    say(f"nf_kernels benchmarks on {env['device_name']}, preset {plan.name}")
    ops, models, checks = library.run_preset(plan, device, progress=not args.no_progress, time_limit_s=args.time_limit,
                                             rounds=args.rounds)  # fmt: skip
    from ..benchmarking.environment import load_average
    from ..benchmarking.report import format_summary

    env["load_average_1m_end"] = load_average()  # the warnings look at the load during the whole run
    say(format_summary(env, ops, models, checks))
    if args.out is not None:
        command = shlex.join(["nf-kernels", *sys.argv[1:]]) if sys.argv else "nf-kernels bench"
        for path in library.write_results(args.out, env, ops, models, checks, command):
            say(f"  wrote {path}")
    return 0


def speed_summary(device: torch.device, budget_seconds: float = 20.0) -> str:
    """A few lines: the fused coupling ops against eager PyTorch (the reference) on this machine.

    Used by ``demo``; the quick preset's cases with only the eager and fused providers (no torch.compile: its
    compile time would dominate a short demo).
    """
    library = benchmarking()
    fused = [name for name in library.available_providers(device) if name not in ("eager", "compile")]
    if not fused:
        from .._dispatch import why_unavailable

        reasons = "; ".join(f"{name}: {why_unavailable(name, device)}" for name in ("cpu", "cuda", "triton"))
        return f"no fused backend runs on this {device.type} machine, so there is nothing to compare ({reasons})"
    plan = library.preset("quick", device.type)
    results = library.run_cases(device, plan.cases, ["eager", *fused], False, budget=plan.budget,
                                time_limit_s=budget_seconds)  # fmt: skip
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
