"""The spline coupling op against nflows' and zuko's own splines, eager and under torch.compile (issue 14).

On the same inputs, timed round-robin in one process on the CPU: nf_kernels' `spline_coupling` with the fused
`cpu` backend and with `reference`, nflows' `unconstrained_rational_quadratic_spline(tails="linear")` and zuko's
`MonotonicRQSTransform`, the peers eager and under `torch.compile(dynamic=False)`; forward, inverse and
forward+backward (loss sum(y) + sum(logdet)); 8 and 16 bins; fp32 and bf16. Reports ms, GB/s of the byte model,
its share of the copy bandwidth measured in the same run, and how many times faster the fused op is than each.

    python benchmarks/spline_op.py                                 # 2^18 elements, 8 bins, fp32: ~3 minutes
    python benchmarks/spline_op.py --elements 1048576 --bins 8 16 --dtypes fp32 bf16 --rounds 3 \
        --out benchmarks/results                                   # issue 14's size and grid (~20 minutes)
    python benchmarks/spline_op.py --implementations cpu nflows "nflows compile"
    python benchmarks/spline_op.py --smoke                         # a tiny run of every column (the tests use it)

Writes `<out>/<machine>-<date>-spline-op.md` and `.json`; `<out>` is `./benchmark-out` unless --out names another
folder. Most of a run's time is torch.compile's (inductor compiles each peer, case and size anew, some 20 s
each on a busy 2-core machine; a second run of the same sizes finds them in its cache). Issue 14's goal (2^20 elements, 8 bins, fp32): the fused `cpu` forward+backward >= 5x nflows' eager and
>= 2x nflows' torch.compile. The pieces live in nf_kernels/benchmarking (spline_cases, byte_model, spline_peers,
spline_op_runner, spline_op_report).
"""

from __future__ import annotations

import argparse
import logging
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

from nf_kernels import keep_freed_cpu_memory  # noqa: E402
from nf_kernels.benchmarking import spline_op_report  # noqa: E402
from nf_kernels.benchmarking.cases import DIRECTIONS  # noqa: E402
from nf_kernels.benchmarking.environment import base_commit, environment, load_average  # noqa: E402
from nf_kernels.benchmarking.report import results_stem  # noqa: E402
from nf_kernels.benchmarking.spline_cases import DEFAULT_FEATURES, SPLINE_DTYPES, spline_op_cases  # noqa: E402
from nf_kernels.benchmarking.spline_op_runner import IMPLEMENTATIONS, run_spline_cases  # noqa: E402
from nf_kernels.benchmarking.spline_peers import PEERS, nflows_agreement, peer_version, zuko_agreement  # noqa: E402

SMOKE = dict(elements=2**10, features=8, bins=[8], dtypes=["fp32"], rounds=2, block_ms=1.0)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    parser.add_argument("--elements", type=int, default=2**18, help="transformed elements T in all")
    parser.add_argument("--features", type=int, default=DEFAULT_FEATURES,
                        help="transformed features a sample D (as many kept); the batch is T / D")
    parser.add_argument("--bins", type=int, nargs="+", default=[8], help="K; issue 14 asks for 8 and 16")
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=SPLINE_DTYPES)
    parser.add_argument("--directions", nargs="+", default=list(DIRECTIONS), choices=DIRECTIONS)
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS,
                        metavar="NAME", help=f"any of {', '.join(map(repr, IMPLEMENTATIONS))}")
    parser.add_argument("--rounds", type=int, default=5, help="timed blocks each implementation takes in turn")
    parser.add_argument("--block-ms", type=float, default=50.0,
                        help="the least time of one timed block of calls (a slower call is one block)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile's backend for the peers")
    parser.add_argument("--smoke", action="store_true",
                        help=f"a tiny run of every column: {SMOKE} (overrides those options)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (pass benchmarks/results to publish a run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    for name in ("elements", "features", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.elements % args.features:
        parser.error(f"--elements ({args.elements}) must be a multiple of --features ({args.features})")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    # The peers' graph breaks (nflows' boolean indexing) are logged at length; the report counts them instead.
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    kept_memory = keep_freed_cpu_memory()  # page faults of big outputs would swamp the op (timing.py says why)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/spline_op.py"] + list(
        sys.argv[1:] if argv is None else argv))  # fmt: skip
    env = dict(environment(torch.device("cpu")), base_commit=base_commit(),
               peers={name: peer_version(name) for name in PEERS})  # fmt: skip
    out = args.out.resolve()
    print(f"spline op benchmark on {env['device_name']}, commit {env['commit']}; results go to {out}", flush=True)
    settings = dict(elements=args.elements, features=args.features, batch=args.elements // args.features,
                    bins=args.bins, dtypes=args.dtypes, directions=args.directions,
                    implementations=args.implementations, rounds=args.rounds, block_ms=args.block_ms,
                    threads=args.threads, compile_backend=args.compile_backend, freed_memory_kept=kept_memory)  # fmt: skip
    agreements = []
    for bins in args.bins:
        for peer, check in (("nflows", nflows_agreement), ("zuko", zuko_agreement)):
            if any(name.startswith(peer) for name in args.implementations) and peer_version(peer):
                agreements.append(check(bins))
    cases = list(spline_op_cases(args.elements, args.bins, args.dtypes, args.directions, args.features))
    results = run_spline_cases(cases, args.implementations, rounds=args.rounds, block_s=args.block_ms / 1e3,
                               compile_backend=args.compile_backend, progress=not args.no_progress)  # fmt: skip
    env["load_average_1m_end"] = load_average()
    graph_breaks = dict(torch._dynamo.utils.counters["graph_break"])
    out.mkdir(parents=True, exist_ok=True)
    paths = spline_op_report.report_paths(results_stem(out, env))
    report = spline_op_report.format_report(env, settings, results, agreements, command, graph_breaks)
    paths["markdown"].write_text(report)
    spline_op_report.write_json(paths["json"], env, settings, results, agreements, command, graph_breaks)
    print(report)
    print(f"wrote {paths['markdown']}, {paths['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
