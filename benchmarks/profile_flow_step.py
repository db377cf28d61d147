"""The issue-12 RealNVP training step on one CPU thread: where its time goes, and what memory saving and compile cost.

    python benchmarks/profile_flow_step.py --dim 4096 --hidden 64 --layers 4
    python benchmarks/profile_flow_step.py --dim 64 --hidden 128 --layers 8 --memory-saving
    python benchmarks/profile_flow_step.py --dim 64 --compare standard memory-saving compile

The model is ``build_model("realnvp", (D,), num_layers=L, hidden=H, depth=2)`` (ReLU MLP conditioners, zero last
layer), Adam, batch 256, ``torch.set_num_threads(1)``. Without ``--compare`` it prints the step time and its
profile by kind and phase (nf_kernels/benchmarking/step_profile.py, the training-step benchmark's profile). With
``--compare`` it times the named variants (``build_model``'s ``memory_saving=True``, ``compile=True``) in turn, round
after round in one process (the machine is shared and noisy), and prints each one's median and its ratio to the
first. benchmarks/training_step.py times the same model against the peer libraries, memory saving included.

Freed memory is kept in the process, as the op benchmarks and `nf-kernels train` do (nf_kernels/cpu_memory.py), unless
``--system-malloc``: glibc otherwise gives freed blocks back and every step page-faults its fresh outputs in again.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # profile the checkout this script belongs to
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from nf_kernels.benchmarking.model_runner import training_step  # noqa: E402
from nf_kernels.benchmarking.step_profile import format_profile, profile_step  # noqa: E402
from nf_kernels import keep_freed_cpu_memory  # noqa: E402
from nf_kernels.flows import build_model  # noqa: E402

VARIANTS = ("standard", "memory-saving", "compile")


def make_model(args: argparse.Namespace, variant: str):
    """The issue's model in `variant`'s mode, its optimizer and a batch."""
    torch.manual_seed(0)
    flow = build_model("realnvp", (args.dim,), num_layers=args.layers, hidden=args.hidden, depth=2,
                       memory_saving=variant == "memory-saving", compile=variant == "compile")  # fmt: skip
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-4)
    return flow, optimizer, torch.randn(args.batch, args.dim, generator=torch.Generator().manual_seed(1))


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
        steps = {variant: training_step(*make_model(args, variant)) for variant in args.compare}
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
    variant = "memory-saving" if args.memory_saving else "standard"
    model, optimizer, x = make_model(args, variant)
    timed = statistics.median(step_times(training_step(model, optimizer, x), args.steps))
    # Another process can only add time: of several profiled runs, the fastest is the least disturbed.
    runs = [profile_step(model, optimizer, x, variant, steps=args.steps, top=12) for _ in range(args.rounds)]
    print(format_profile(min(runs, key=lambda run: run.step_seconds), timed))

if __name__ == "__main__":
    main()
