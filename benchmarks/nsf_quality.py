"""NSF quality (issue 14): the same NSF trained in nf_kernels, nflows and zuko from the same seed, then tested.

    python benchmarks/nsf_quality.py                              # moons (1000 steps) and digits (500), 1 thread
    python benchmarks/nsf_quality.py --toys moons eight_gaussians --digits-steps 3000
    python benchmarks/nsf_quality.py --out benchmarks/results     # a run to publish (commit it)

Reports the test NLL (nats per sample) on each 2-D toy and bits/dim on the bundled digits (a vector flow on their
64 pixels) per library. The peers are installed with `pip install --no-deps -r requirements-bench.txt`; one that is
not installed gets a line saying so. Writes `<out>/<machine>-<date>-nsf-quality.md` and `.json`; `<out>` is
`./benchmark-out` unless --out names another folder. The training and the report are in
nf_kernels/benchmarking/nsf_quality.py, the models in peer_models.py.
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
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see benchmarks/run.py)

import torch  # noqa: E402

from nf_kernels import keep_freed_cpu_memory  # noqa: E402
from nf_kernels.benchmarking import nsf_quality, training_step  # noqa: E402
from nf_kernels.benchmarking.environment import base_commit, environment  # noqa: E402
from nf_kernels.benchmarking.report import results_stem  # noqa: E402
from nf_kernels.data import load_dataset  # noqa: E402
from nf_kernels.data.toys import TOYS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the same NSF in nf_kernels, nflows and zuko (same seed, optimizer, batches and steps) "
        "and report each one's test NLL (2-D toys) or bits/dim (digits).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--toys", nargs="*", default=list(nsf_quality.DEFAULT_TOYS), choices=TOYS, metavar="NAME",
                        help=f"2-D toys to train on, any of {', '.join(TOYS)} (none: digits only)")
    parser.add_argument("--no-digits", action="store_true", help="skip the digits")
    parser.add_argument("--toy-steps", type=int, default=nsf_quality.DEFAULT_STEPS["toy"])
    parser.add_argument("--digits-steps", type=int, default=nsf_quality.DEFAULT_STEPS["digits"])
    parser.add_argument("--libraries", nargs="+", default=list(nsf_quality.QUALITY_LIBRARIES),
                        choices=nsf_quality.QUALITY_LIBRARIES, metavar="NAME",
                        help=f"any of {', '.join(nsf_quality.QUALITY_LIBRARIES)}")
    parser.add_argument("--batch", type=int, default=nsf_quality.DEFAULT_BATCH)
    parser.add_argument("--seed", type=int, default=0, help="the models' and the batches' seed, every library's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (pass benchmarks/results to publish a run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for name in ("toy_steps", "digits_steps", "batch", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not args.toys and args.no_digits:
        parser.error("nothing to train on: give --toys or drop --no-digits")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_cpu_memory()  # as nf-kernels train does on the CPU (nf_kernels/cpu_memory.py)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + (argv or sys.argv[1:]))
    device = torch.device("cpu")
    env = dict(environment(device), peers=training_step.peer_versions(), base_commit=base_commit())
    out = args.out.resolve()
    print(f"NSF quality on {env['device_name']}, commit {env['commit']}; results go to {out}", flush=True)
    datasets = [load_dataset(name) for name in args.toys] + ([] if args.no_digits else [load_dataset("digits")])
    steps = {"toy": args.toy_steps, "digits": args.digits_steps}
    settings = dict(toys=args.toys, digits=not args.no_digits, steps=steps, batch=args.batch, seed=args.seed,
                    libraries=args.libraries)  # fmt: skip
    results = nsf_quality.run_quality(datasets, args.libraries, steps=steps, batch=args.batch, seed=args.seed,
                                      progress=not args.no_progress)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    paths = nsf_quality.report_paths(results_stem(out, env))
    report = nsf_quality.format_report(env, settings, results, command)
    paths["markdown"].write_text(report)
    nsf_quality.write_json(paths["json"], env, settings, results, command)
    print(report)
    print(f"wrote {paths['markdown']}, {paths['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
