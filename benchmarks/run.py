"""Benchmark the coupling ops and flow models side by side; write markdown, JSON and plots.

    python benchmarks/run.py                       # the default plan for this machine (GPU if there is one)
    python benchmarks/run.py --preset quick        # seconds
    python benchmarks/run.py --what ops --log2-sizes 20 24 --dtypes fp32 --masks half
    python benchmarks/run.py --preset gpu-suite --out "$OUT"   # what benchmarks/gpu_suite.sh runs
    python benchmarks/run.py --out benchmarks/results          # a run to publish (commit it)

Results go to `<out>/<machine>-<date>.md` and `.json` (rewritten after every case, so a run cut short keeps what it
measured), `<machine>-<date>-summary.md` (targets, the largest size of each configuration, the models; also printed
at the end) and `<machine>-<date>-<dtype>.png` (GB/s against size). `<out>` is `./benchmark-out` unless --out
names another folder: the published runs in benchmarks/results/ change only when asked to.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("benchmark-out")  # in the current folder; ignored by git (.gitignore), unlike benchmarks/results
sys.path.insert(0, str(REPO_ROOT))  # benchmark the checkout this script belongs to
# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. On a small shared CPU, spinning threads
# were seen to stall the timed calls by whole scheduler slices (8 ms steps in 0.05 ms calls).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from nf_kernels.benchmarking.cases import DIRECTIONS, DTYPES, MASKS, OPS, op_cases  # noqa: E402
from nf_kernels.benchmarking.model_runner import BENCHMARKED_MODELS  # noqa: E402
from nf_kernels.benchmarking.presets import PRESETS, WHAT, preset, run_plan  # noqa: E402
from nf_kernels.benchmarking.providers import PROVIDERS  # noqa: E402
from nf_kernels.benchmarking.report import format_summary  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="nf_kernels benchmarks: fused backends vs eager and torch.compile of the reference, "
        "against the copy-bandwidth floor (SPEC section 4).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    parser.add_argument("--preset", default="default", choices=PRESETS, help="which cases and how long")
    parser.add_argument("--what", default="all", choices=WHAT)
    group = parser.add_argument_group("op cases (each option given replaces the preset's choice for it)")
    group.add_argument("--log2-sizes", type=int, nargs="+", metavar="K", help="sizes 2^K elements of x")
    group.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES))
    group.add_argument("--ops", nargs="+", choices=OPS)
    group.add_argument("--directions", nargs="+", choices=DIRECTIONS)
    group.add_argument("--masks", nargs="+", choices=MASKS)
    group.add_argument("--providers", nargs="+", choices=PROVIDERS, help="default: all that run on the device")
    group.add_argument("--compile-static", action="store_true",
                       help="torch.compile each size separately (dynamic=False) instead of once per configuration")
    group.add_argument("--ops-time-limit", type=float, metavar="S", help="start no new op case after S seconds")
    group.add_argument("--rounds", type=int,
                       help="measure the providers of each case in turn this many times, keep each one's median "
                       "and report the spread (default: the preset's, 3 for quick and default, 1 for the others)")
    group = parser.add_argument_group("models")
    group.add_argument("--models", nargs="+", choices=BENCHMARKED_MODELS)
    group.add_argument("--model-batch", type=int, help="default: 64 on CUDA, 16 on the CPU")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (pass benchmarks/results to publish a run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--system-malloc", action="store_true",
                        help="CPU: leave glibc malloc as it is (by default freed memory is kept, so timings do not "
                        "include page faults; see nf_kernels/cpu_memory.py)")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.model_batch is not None and args.model_batch <= 0:
        parser.error(f"--model-batch must be positive, got {args.model_batch}")
    if args.log2_sizes and any(not 4 <= k <= 34 for k in args.log2_sizes):
        parser.error(f"--log2-sizes must be between 4 and 34, got {args.log2_sizes}")
    return args


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device (try --device cpu)")
    return device


def select_cases(plan, args) -> list:
    """The preset's cases, with each dimension given on the command line replacing the preset's values."""
    if not any((args.log2_sizes, args.dtypes, args.ops, args.directions, args.masks)):
        return list(plan.cases)

    def values(option, attribute):
        return option or list(dict.fromkeys(getattr(case, attribute) for case in plan.cases))

    sizes = [2**k for k in args.log2_sizes] if args.log2_sizes else values(None, "numel")
    return list(op_cases(sizes, values(args.dtypes, "dtype"), values(args.ops, "op"),
                         values(args.directions, "direction"), values(args.masks, "mask")))  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    device = resolve_device(args.device)
    if device.type == "cpu":
        # Inductor's background compile workers would compete with the timed code for the few cores.
        import torch._inductor.config

        torch._inductor.config.compile_threads = 1
    plan = preset(args.preset, device.type)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:])
    cases = select_cases(plan, args) if args.what in ("all", "ops") else []

    def announce(env: dict) -> None:
        print(f"nf_kernels benchmarks on {env['device_name']}, commit {env['commit']}, preset {plan.name}; "
              f"results go to {out}", flush=True)

    run = run_plan(
        plan, device, what=args.what, cases=cases, providers=args.providers, compile_dynamic=not args.compile_static,
        time_limit_s=args.ops_time_limit, rounds=args.rounds, models=args.models, model_batch=args.model_batch,
        progress=not args.no_progress, keep_freed_memory=not args.system_malloc, out_dir=out, command=command,
        save_each_case=True, on_start=announce,
    )  # fmt: skip
    measured = len({r.case for r in run.op_results})
    if measured < len(cases):
        print(f"note: the time limit stopped the op benchmarks after {measured} of {len(cases)} cases")
    print(format_summary(run.env, run.op_results, run.model_results, run.checks, run.overhead_results))
    print("wrote " + ", ".join(str(path) for path in run.written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
