"""The training step of each peer library's own RealNVP, before and after nf_kernels.compat.accelerate.

For every library (normflows, nflows, zuko, FrEIA, pyro) and size D: the RealNVP of the training-step benchmark
(nf_kernels/benchmarking/peer_models.py: 8 affine couplings on alternating halves, conditioners of 2 hidden
layers, 128 wide or 64 at D >= 1024, a standard normal base; pyro's is built here the same way), batch 256, one
Adam step on the mean negative log-likelihood. Two builds with the same weights, one of them accelerated, take
turns, one step each (round-robin, after a warm-up), on one thread; the table gives each one's median step time,
the speed-up (before / after) and the backends "auto" chose for the accelerated couplings.

    python benchmarks/compat_speedup.py                       # every library, D = 2, 64, 4096
    python benchmarks/compat_speedup.py --libraries nflows --sizes 64 --rounds 5
    python benchmarks/compat_speedup.py --clock thread        # this thread's CPU time: for a shared, loaded machine

Issue 13's goal: >= 1.3x at D=4096, never slower at D=64 and D=2, on the CPU. docs/compat.md has the last results.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark the checkout this script belongs to

import torch  # noqa: E402

import nf_kernels  # noqa: E402
import nf_kernels.compat  # noqa: E402
from nf_kernels import functional  # noqa: E402
from nf_kernels.benchmarking import peer_models  # noqa: E402
from nf_kernels.benchmarking.model_runner import training_step  # noqa: E402

LIBRARIES = (*peer_models.PEERS, "pyro")
COUPLINGS = 8


def spec(features: int) -> peer_models.RealNVPSpec:
    """Issue 13's model: 8 couplings of 2 hidden layers, 128 wide (64 from D=1024 on, issue 12's large model)."""
    return peer_models.RealNVPSpec(features, couplings=COUPLINGS, hidden=64 if features >= 1024 else 128)


def pyro_model(spec: peer_models.RealNVPSpec) -> peer_models.BenchModel:
    """pyro's RealNVP (pyro is not among the training-step benchmark's peers): affine couplings from its
    `affine_coupling` helper (a DenseNN hypernet), a reversal between them, a TransformedDistribution."""
    import pyro.distributions as dist
    from pyro.distributions import transforms as T

    couplings = torch.nn.ModuleList(T.affine_coupling(spec.features, hidden_dims=[spec.hidden] * spec.depth)
                                    for _ in range(spec.couplings))  # fmt: skip
    flip = T.Permute(torch.arange(spec.features - 1, -1, -1))
    base = dist.Normal(torch.zeros(spec.features), torch.ones(spec.features)).to_event(1)
    flow = dist.TransformedDistribution(base, [t for coupling in couplings for t in (coupling, flip)])
    return peer_models.BenchModel("pyro", couplings, flow.log_prob)


def build(library: str, features: int) -> peer_models.BenchModel:
    torch.manual_seed(0)  # the same weights for both builds
    return pyro_model(spec(features)) if library == "pyro" else peer_models.build(library, spec(features))


def backends_chosen(model, x) -> str:
    """The backends "auto" picked for the accelerated model's couplings (recorded on one small forward)."""
    chosen, resolve = set(), functional.resolve_backend

    def recording(requested, device, config=None):
        name = resolve(requested, device, config)
        chosen.add(name)
        return name

    functional.resolve_backend = recording
    try:
        with torch.no_grad():
            model.log_prob(x)
    finally:
        functional.resolve_backend = resolve
    return "+".join(sorted(chosen)) or "-"


# How a step is timed: wall-clock time, or the CPU time of this (the only torch) thread, which on a machine shared with
# other busy processes leaves out the time the thread waits for a core (it still counts their cache contention).
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def measure(library: str, features: int, batch: int, rounds: int, warmup: int, clock=time.perf_counter) -> dict:
    before, after = build(library, features), build(library, features)
    report = nf_kernels.compat.accelerate(after.network)
    x = peer_models.sample_batch(spec(features), batch)
    steps = {name: training_step(model, torch.optim.Adam(model.parameters(), lr=1e-4), x)
             for name, model in (("before", before), ("after", after))}  # fmt: skip
    times = {name: [] for name in steps}
    for _ in range(warmup):
        for step in steps.values():
            step()
    for _ in range(rounds):  # round-robin: one step of each in turn, so that drifts of the machine hit both
        for name, step in steps.items():
            start = clock()
            step()
            times[name].append(clock() - start)
    before_s, after_s = statistics.median(times["before"]), statistics.median(times["after"])
    return dict(before_ms=1e3 * before_s, after_ms=1e3 * after_s, speedup=before_s / after_s,
                replaced=len(report.replaced), backend=backends_chosen(after, x[:2]))  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 64, 4096])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15, help="timed steps of each model (default 15)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock time (default) or this thread's CPU time (with --threads 1 only)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="glibc's default allocator settings (default: freed memory kept, as the training-step "
                        "benchmark does, so that steps do not time page faults)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread times the calling thread only: use it with --threads 1")
    torch.set_num_threads(args.threads)
    if not args.system_malloc:
        nf_kernels.keep_freed_cpu_memory()
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.rounds} rounds, "
          f"{'system malloc' if args.system_malloc else 'freed memory kept'}, {args.clock} clock")
    print("| library | D | before (ms) | after (ms) | speed-up | layers replaced | backend (auto) |")
    print("|---|---|---|---|---|---|---|")
    for library in args.libraries:
        for features in args.sizes:
            try:
                row = measure(library, features, args.batch, args.rounds, args.warmup, CLOCKS[args.clock])
            except ImportError as error:
                print(f"| {library} | {features} | not installed: {error} | | | | |")
                continue
            print(f"| {library} | {features} | {row['before_ms']:.2f} | {row['after_ms']:.2f} | {row['speedup']:.2f}x "
                  f"| {row['replaced']} | {row['backend']} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
