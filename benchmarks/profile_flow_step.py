"""Where a flow's training step spends its time: the issue-12 RealNVP step, profiled op by op on one CPU thread.

    python benchmarks/profile_flow_step.py --dim 4096 --hidden 64 --layers 4
    python benchmarks/profile_flow_step.py --dim 64 --hidden 128 --layers 8 --memory-saving
    python benchmarks/profile_flow_step.py --dim 64 --compare standard memory-saving compile

The model is ``build_model("realnvp", (D,), num_layers=L, hidden=H, depth=2)`` (ReLU MLP conditioners, zero last
layer), Adam, batch 256, ``torch.set_num_threads(1)``. Without ``--compare`` it prints the step time and a
profile: the self time of every op, summed by kind (matrix products, the coupling kernels, the op layer around
them, other aten ops, the optimizer, Python and autograd). With ``--compare`` it times the named variants in
turn, round after round in one process (the machine is shared and noisy), and prints each one's median.

Freed memory is kept in the process, as the op benchmarks and `nf-kernels train` do (nf_kernels/cpu_memory.py), unless
``--system-malloc``: glibc otherwise gives freed blocks back and every step page-faults its fresh outputs in again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # profile the checkout this script belongs to
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from nf_kernels.benchmarking.model_runner import training_step  # noqa: E402
from nf_kernels import keep_freed_cpu_memory  # noqa: E402
from nf_kernels.flows import build_model  # noqa: E402

VARIANTS = ("standard", "memory-saving", "compile")
_MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"}


def make_step(args: argparse.Namespace, variant: str):
    torch.manual_seed(0)
    options = {"compile": True} if variant == "compile" else {}
    flow = build_model("realnvp", (args.dim,), num_layers=args.layers, hidden=args.hidden, depth=2,
                       memory_saving=variant == "memory-saving", **options)  # fmt: skip
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.dim, generator=torch.Generator().manual_seed(1))
    return training_step(flow, optimizer, x)


def step_times(step, count: int) -> list[float]:
    """Seconds of each of `count` steps. On one torch thread, the CPU time of this thread: all the work runs here,
    and time the scheduler gives another process is not counted (wall time on a shared machine is noisier)."""
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    times = []
    for _ in range(count):
        start = clock()
        step()
        times.append(clock() - start)
    return times


def _kind(event) -> str:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return "optimizer (Adam)"
        parent = parent.cpu_parent
    name = event.name
    if name in _MATMULS:
        return "matrix products"
    if name.startswith("nf_kernels_ext::"):
        return "coupling kernels"
    if name.startswith("nf_kernels::") or "nf_kernels_coupling" in name:
        return "coupling op layer"
    if name.startswith("aten::"):
        return "other aten ops (elementwise, copies, reductions)"
    return "autograd, Python, the rest"


def _profile_round(step, steps: int) -> tuple[dict, dict]:
    """Self CPU time (us) by kind and by (op, input shapes) over `steps` profiled steps, and each op's call count."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    by_kind: dict[str, float] = defaultdict(float)
    by_op: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        by_kind[_kind(event)] += event.self_cpu_time_total
        entry = by_op[event.name, str(event.input_shapes)[:60]]
        entry[0] += event.self_cpu_time_total
        entry[1] += 1
    return by_kind, by_op


def print_profile(step, steps: int, rounds: int) -> None:
    """The profile of the least disturbed of `rounds` rounds, entry by entry: another process on the machine
    only ever adds time."""
    results = [_profile_round(step, steps) for _ in range(rounds)]
    by_kind = {kind: min(r[0].get(kind, 0.0) for r in results) for kind in results[0][0]}
    by_op = {op: (min(r[1][op][0] for r in results if op in r[1]), calls) for op, (_, calls) in results[0][1].items()}
    total = sum(by_kind.values())
    print(f"\nprofiled: {total / steps / 1e3:.2f} ms a step (self CPU time, profiler overhead included; "
          f"each entry the least of {rounds} rounds)")
    print(f"{'kind':52s} {'ms/step':>8s} {'share':>6s}")
    for kind, us in sorted(by_kind.items(), key=lambda item: -item[1]):
        print(f"{kind:52s} {us / steps / 1e3:8.3f} {us / total:6.1%}")
    print(f"\n{'op':40s} {'input shapes':60s} {'calls/step':>10s} {'ms/call':>8s} {'ms/step':>8s}")
    for (name, shapes), (us, calls) in sorted(by_op.items(), key=lambda item: -item[1][0])[:18]:
        print(f"{name[:40]:40s} {shapes:60s} {calls / steps:10.1f} {us / calls / 1e3:8.3f} {us / steps / 1e3:8.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--memory-saving", action="store_true", help="profile the memory-saving step")
    parser.add_argument("--compare", nargs="+", choices=VARIANTS, help="time these variants against each other")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of --steps steps (per variant with --compare)")
    parser.add_argument("--steps", type=int, default=20, help="timed (and profiled) steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--system-malloc", action="store_true", help="let glibc return freed memory (page faults)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kept = not args.system_malloc and keep_freed_cpu_memory()
    print(f"realnvp D={args.dim} hidden={args.hidden} layers={args.layers} batch={args.batch}, "
          f"{args.threads} thread(s), freed memory {'kept' if kept else 'returned to the system'}")  # fmt: skip
    if args.compare:
        steps = {variant: make_step(args, variant) for variant in args.compare}
        times: dict[str, list[float]] = {variant: [] for variant in args.compare}
        for step in steps.values():
            step_times(step, 5)  # warm-up (and compilation)
        for _ in range(args.rounds):
            for variant, step in steps.items():
                times[variant].append(statistics.median(step_times(step, args.steps)))
        base = statistics.median(times[args.compare[0]])
        for variant, medians in times.items():
            median = statistics.median(medians)
            spread = ", ".join(f"{t * 1e3:.2f}" for t in medians)
            print(f"{variant:14s} {median * 1e3:8.3f} ms a step  ({median / base:.3f}x {args.compare[0]}; rounds: {spread})")
        return
    step = make_step(args, "memory-saving" if args.memory_saving else "standard")
    step_times(step, 5)
    times = sorted(step_times(step, args.steps))
    print(f"step: median {statistics.median(times) * 1e3:.3f} ms, min {times[0] * 1e3:.3f} ms")
    print_profile(step, args.steps, args.rounds)


if __name__ == "__main__":
    main()
