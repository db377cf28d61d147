"""One training step of the same RealNVP in nf_kernels and in normflows, nflows, zuko and FrEIA, side by side;
with --model nsf, of the same neural spline flow in nf_kernels, nflows and zuko (issue 14).

    python benchmarks/training_step.py                            # D=2, 64, 4096 on the CPU, 1 thread, 5 rounds
    python benchmarks/training_step.py --sizes 64 --libraries nf_kernels zuko --rounds 3
    python benchmarks/training_step.py --profile                  # also where nf_kernels' step spends its time
    python benchmarks/training_step.py --model nsf                # the 4-coupling NSF at D=8 and 64
    python benchmarks/training_step.py --optimizer fused-adam     # every model steps with torch's fused Adam
    python benchmarks/training_step.py --out benchmarks/results   # a run to publish (commit it)

The peers are installed with `pip install --no-deps -r requirements-bench.txt`; a library that is not installed is
skipped with a line saying so. Writes `<out>/<machine>-<date>-training-step.md` and `.json` (and, with --profile,
`-training-step-profile.md`; `-nsf-step` in place of `-training-step` with --model nsf); `<out>` is `./benchmark-out` unless --out names another folder. The models and the
timing are in nf_kernels/benchmarking/peer_models.py and training_step.py, the profile in step_profile.py.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("benchmark-out")  # ignored by git, unlike benchmarks/results
sys.path.insert(0, str(REPO_ROOT))  # benchmark the checkout this script belongs to
# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning (see benchmarks/run.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from nf_kernels.benchmarking import step_profile, training_step  # noqa: E402
from nf_kernels.benchmarking.environment import base_commit, environment, load_average  # noqa: E402
from nf_kernels.benchmarking.peer_models import LIBRARIES, NSF_LIBRARIES, PEERS  # noqa: E402
from nf_kernels.benchmarking.report import results_stem  # noqa: E402
from nf_kernels import keep_freed_cpu_memory  # noqa: E402

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Per --model: the model of each size, the default sizes and libraries, and the results' file name part.
MODELS = {
    "realnvp": (training_step.issue_spec, training_step.DEFAULT_SIZES, LIBRARIES, "training-step"),
    "nsf": (training_step.nsf_spec, training_step.NSF_DEFAULT_SIZES, NSF_LIBRARIES, "nsf-step"),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A training step (forward, backward, Adam) of the same RealNVP (or NSF) in nf_kernels and the "
        "peer libraries, timed round-robin in one process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", choices=tuple(MODELS), default="realnvp",
                        help="realnvp: affine couplings (issue 12); nsf: 4 rational-quadratic spline couplings, 8 "
                        "bins on [-3, 3] (issue 14), against nflows and zuko")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="D",
                        help="data dimensions (default: 2 64 4096 for realnvp, 8 64 for nsf); realnvp: D >= 1024 gets "
                        "4 couplings of hidden 64, smaller D 8 of hidden 128; nsf: hidden 128 from D=64 on, 64 below")
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, metavar="NAME",
                        help=f"any of {', '.join(LIBRARIES)} (default: all for realnvp, "
                        f"{', '.join(NSF_LIBRARIES)} for nsf)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch", type=int, default=training_step.DEFAULT_BATCH)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model per round, before them")
    parser.add_argument("--rounds", type=int, default=5, help="turns every model takes")
    parser.add_argument("--autocast", choices=tuple(AUTOCAST), help="run the forward passes under torch.autocast")
    parser.add_argument("--optimizer", choices=tuple(training_step.OPTIMIZERS), default="adam",
                        help="what every model steps with: adam is torch's Adam with its defaults (on the CPU one "
                        "parameter at a time), fused-adam its fused kernel, as nf-kernels train steps; results of "
                        "fused-adam go to files named -fused-adam")
    parser.add_argument("--profile", action="store_true",
                        help="also profile nf_kernels' step at each size (torch.profiler, per layer kind)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (pass benchmarks/results to publish a run)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="CPU: leave glibc malloc as it is, as in a process that never calls "
                        "nf_kernels.keep_freed_cpu_memory (by default freed memory is kept, as nf-kernels train does)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    _, default_sizes, default_libraries, _ = MODELS[args.model]
    args.sizes = list(args.sizes or default_sizes)
    args.libraries = list(args.libraries or default_libraries)
    for name in ("threads", "batch", "steps", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    bad = [d for d in args.sizes if d < 2 or d % 2]
    if bad:
        parser.error(f"--sizes must be even and at least 2 (the couplings split halves), got {bad}")
    if not any(name in PEERS for name in args.libraries):
        print("note: no peer library among --libraries: there is no fastest peer to compare with")
    return args


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device (try --device cpu)")
    return device


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    kept_memory = device.type == "cpu" and not args.system_malloc and keep_freed_cpu_memory()
    # (what nf-kernels train does on the CPU: nf_kernels/cpu_memory.py)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + (argv or sys.argv[1:]))
    env = dict(environment(device), peers=training_step.peer_versions(), base_commit=base_commit())
    out = args.out.resolve()
    print(f"training step benchmark on {env['device_name']}, commit {env['commit']}; results go to {out}", flush=True)
    spec_of, _, _, what = MODELS[args.model]
    specs = [spec_of(d) for d in args.sizes]
    settings = dict(model=args.model, batch=args.batch, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
                    autocast=args.autocast, optimizer=args.optimizer, sizes=args.sizes, libraries=args.libraries,
                    freed_memory_kept=kept_memory)  # fmt: skip
    results = training_step.run_training_steps(
        specs, args.libraries, device, batch=args.batch, steps=args.steps, warmup=args.warmup, rounds=args.rounds,
        autocast=AUTOCAST.get(args.autocast), optimizer=args.optimizer, progress=not args.no_progress,
    )  # fmt: skip
    profiles = []
    if args.profile:
        profiles = step_profile.profile_models(specs, device, batch=args.batch, autocast=AUTOCAST.get(args.autocast),
                                               make_optimizer=training_step.OPTIMIZERS[args.optimizer])  # fmt: skip
    env["load_average_1m_end"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    if args.optimizer != "adam":
        what += f"-{args.optimizer}"
    paths = training_step.report_paths(results_stem(out, env), what)
    report = training_step.format_report(env, settings, results, command)
    paths["markdown"].write_text(report)
    training_step.write_json(paths["json"], env, settings, results, command, [p.to_dict() for p in profiles])
    written = [paths["markdown"], paths["json"]]
    if profiles:
        timed = {r.spec.label: r.seconds for r in results if r.library == "nf_kernels" and r.seconds}
        paths["profile"].write_text(step_profile.format_profiles(env, profiles, timed, command))
        written.append(paths["profile"])
    print(report)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
