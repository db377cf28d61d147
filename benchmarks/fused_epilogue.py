"""Does fusing the conditioner's last linear layer into the coupling pay on this machine? A measurement, not a
feature: the D=4096 RealNVP training step (issue 12's: 4 affine couplings on alternating halves, ReLU MLPs of 2
hidden layers of 64, tanh scale with clamp 2, Adam, batch 256) with its last layers and couplings run each way
below, every way in one process, round-robin, on the extension's raw CPU kernels and ATen's products.

- ``separate``: the last layer's product over the whole batch, then the coupling kernel; in backward the
  coupling's backward kernel, then grad_W = grad_h^T a, grad_b = the column sums of grad_h and grad_a = grad_h W.
  What nf_kernels runs today (csrc/ops/mlp_coupling.cpp).
- ``rows R``: the epilogue tile by tile: for each block of R samples, the last layer's product and the coupling
  kernel on that block (forward), and the backward kernel with the three reductions accumulated block by block
  (backward), so h and grad_h of a block are consumed while they are in cache and grad_h is never written in full.
- ``bias in product``: the bias folded into the product, ``[a, 1] @ [W, b]^T``, and its gradient into
  ``grad_h^T [a, 1]``: no separate pass over h or grad_h for the bias.
- ``no bias (bound)``: the same model without the last layer's bias: not a model anyone trains, only the most that
  folding the bias into the coupling kernel could save (its two passes, forward and backward, cost nothing).

Every way's gradients are checked before anything is timed against plain autograd's through the linear layers and
``nf_kernels.affine_coupling`` (float32: relative error of each parameter's gradient under 1e-4; the no-bias bound
is another model and is not compared). Reported: the median step time
over rounds and the median of the per-round ratios to ``separate``.

    python benchmarks/fused_epilogue.py                       # the issue's sizes, rows 16, 32 and 64
    python benchmarks/fused_epilogue.py --rounds 15 --profile --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark the checkout this script belongs to

import torch  # noqa: E402

import nf_kernels  # noqa: E402
from nf_kernels._build import load  # noqa: E402
from nf_kernels._prepared import prepare_call  # noqa: E402
from nf_kernels.benchmarking.environment import cpu_name, git_commit, machine_slug  # noqa: E402

SEPARATE, BIAS_IN_PRODUCT, NO_BIAS = "separate", "bias in product", "no bias (bound)"
CLAMP = 2.0


def rows_way(rows: int) -> str:
    return f"rows {rows}"


def block_rows(way: str) -> Optional[int]:
    """The block size of a tiled way (``rows_way``), None for the others."""
    return int(way.split()[1]) if way.startswith("rows ") else None


class Epilogue(torch.autograd.Function):
    """One coupling layer: its conditioner (two hidden ReLU layers, then the last layer) and the coupling kernel,
    the last layer and the coupling run as `way` says (module docstring)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, w3, b3, kept_start, layout, way):
        ops = torch.ops.nf_kernels_ext
        half = x.shape[1] // 2
        kept = x[:, kept_start : kept_start + half]
        a1 = torch.addmm(b1, kept, w1.t()).relu_()
        a2 = torch.addmm(b2, a1, w2.t()).relu_()
        rows = block_rows(way)
        if rows is not None:
            h = x.new_empty(x.shape[0], w3.shape[0])
            y, logdet = torch.empty_like(x), x.new_empty(x.shape[0])
            for r in range(0, x.shape[0], rows):
                block = slice(r, r + rows)
                torch.addmm(b3, a2[block], w3.t(), out=h[block])
                y[block], logdet[block] = ops.coupling_forward(x[block], h[block], None, layout, CLAMP, 0.0, None,
                                                               False)  # fmt: skip
        else:
            if way == BIAS_IN_PRODUCT:
                h = torch.mm(_with_ones(a2), torch.cat([w3, b3[:, None]], 1).t())
            elif way == NO_BIAS:
                h = torch.mm(a2, w3.t())
            else:
                h = torch.addmm(b3, a2, w3.t())
            y, logdet = ops.coupling_forward(x, h, None, layout, CLAMP, 0.0, None, False)
        ctx.save_for_backward(x, h, kept, a1, a2, w1, w2, w3)
        ctx.kept_start, ctx.layout, ctx.way, ctx.rows = kept_start, layout, way, rows
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        ops = torch.ops.nf_kernels_ext
        x, h, kept, a1, a2, w1, w2, w3 = ctx.saved_tensors
        kept_start, layout, way, rows = ctx.kept_start, ctx.layout, ctx.way, ctx.rows
        grad_b3 = None
        if rows is not None:
            grad_x = torch.empty_like(x)
            grad_w3_t = a2.new_zeros(a2.shape[1], w3.shape[0])  # a^T grad_h: the faster product's layout
            grad_b3 = h.new_zeros(w3.shape[0])
            grad_a2 = torch.empty_like(a2)
            for r in range(0, x.shape[0], rows):
                block = slice(r, r + rows)
                grad_x[block], grad_h = ops.coupling_backward(grad_y[block], grad_logdet[block], x[block], h[block],
                                                              None, layout, CLAMP, 0.0, None, False)  # fmt: skip
                grad_w3_t.addmm_(a2[block].t(), grad_h)
                grad_b3 += grad_h.sum(0)
                torch.mm(grad_h, w3, out=grad_a2[block])
            grad_w3 = grad_w3_t.t()
        else:
            grad_x, grad_h = ops.coupling_backward(grad_y, grad_logdet, x, h, None, layout, CLAMP, 0.0, None, False)
            if way == BIAS_IN_PRODUCT:
                both = grad_h.t().mm(_with_ones(a2))
                grad_w3, grad_b3 = both[:, :-1], both[:, -1]
            else:
                grad_w3 = grad_h.t().mm(a2)
                if way != NO_BIAS:
                    grad_b3 = grad_h.sum(0)
            grad_a2 = grad_h.mm(w3)
        grad_a2 = torch.ops.aten.threshold_backward(grad_a2, a2, 0)
        grad_a1 = torch.ops.aten.threshold_backward(grad_a2.mm(w2), a1, 0)
        if ctx.needs_input_grad[0]:
            grad_x[:, kept_start : kept_start + kept.shape[1]] += grad_a1.mm(w1)
        return (grad_x, grad_a1.t().mm(kept), grad_a1.sum(0), grad_a2.t().mm(a1), grad_a2.sum(0), grad_w3, grad_b3,
                None, None, None)  # fmt: skip


def _with_ones(a: torch.Tensor) -> torch.Tensor:
    return torch.cat([a, a.new_ones(a.shape[0], 1)], 1)


class Model:
    """The flow's parameters (the same initial values for every way) and its Adam, stepped with one way."""

    def __init__(self, initial: list[list[torch.Tensor]], way: str, layouts: list, lr: float = 1e-4):
        self.way, self.layouts = way, layouts
        self.layers = [[p.detach().clone().requires_grad_(True) for p in layer] for layer in initial]
        self.optimizer = torch.optim.Adam([p for layer in self.layers for p in layer], lr)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        z, total = x, 0
        for (w1, b1, w2, b2, w3, b3), (kept_start, layout) in zip(self.layers, self.layouts):
            z, logdet = Epilogue.apply(z, w1, b1, w2, b2, w3, b3, kept_start, layout, self.way)
            total = total + logdet
        return (0.5 * (z * z).sum(1) - total).mean()

    def step(self, x: torch.Tensor) -> None:
        loss = self.loss(x)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


def initial_layers(features: int, hidden: int, couplings: int, seed: int = 0) -> list[list[torch.Tensor]]:
    """Each coupling's ``[W_1, b_1, W_2, b_2, W_3, b_3]`` as nn.Linear initializes them, the last weight small but
    not zero (its gradients then reach every layer). The no-bias way never reads b_3 and gives it no gradient, so
    Adam leaves it alone."""
    generator = torch.Generator().manual_seed(seed)
    half = features // 2
    layers = []
    for _ in range(couplings):
        layer = []
        for fan_in, fan_out in ((half, hidden), (hidden, hidden), (hidden, features)):
            bound = fan_in**-0.5
            layer.append((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound)
            layer.append((torch.rand(fan_out, generator=generator) * 2 - 1) * bound)
        layer[4] *= 0.01
        layers.append(layer)
    return layers


def coupling_layouts(batch: int, features: int, couplings: int) -> list:
    """(kept start, the raw ops' packed layout) of each coupling: the first half kept, then the last, in turn."""
    out = []
    for i in range(couplings):
        flip = i % 2 == 1
        x, h = torch.empty(batch, features), torch.empty(batch, features)
        prepared = prepare_call(x, h, mask="half", flip=flip, scale="tanh", clamp=CLAMP, shift_first=False,
                                reverse=False, backend="cpu", additive=False, h_layout="scale_shift")  # fmt: skip
        out.append((features - features // 2 if flip else 0, prepared.layout))
    return out


def autograd_loss(model: Model, x: torch.Tensor, features: int) -> torch.Tensor:
    """The same loss as ``model.loss``, by plain autograd through the linear layers and the public op: the anchor the
    hand-written ways are checked against (through ``separate``)."""
    z, total = x, 0
    for i, (w1, b1, w2, b2, w3, b3) in enumerate(model.layers):
        flip = i % 2 == 1
        kept = z[:, features - features // 2 :] if flip else z[:, : features // 2]
        a = torch.relu(torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(kept, w1, b1)), w2, b2))
        z, logdet = nf_kernels.affine_coupling(z, torch.nn.functional.linear(a, w3, b3), mask="half", flip=flip,
                                               scale="tanh", clamp=CLAMP, backend="cpu")  # fmt: skip
        total = total + logdet
    return (0.5 * (z * z).sum(1) - total).mean()


def check_agreement(models: dict[str, Model], x: torch.Tensor, tolerance: float = 1e-4) -> float:
    """The largest relative gradient error of any way against plain autograd's (:func:`autograd_loss` on the
    separate way's parameters); raises above `tolerance`. The no-bias bound is another model and is not compared."""
    anchor = models[SEPARATE]
    reference = torch.autograd.grad(autograd_loss(anchor, x, x.shape[1]), [p for layer in anchor.layers for p in layer])
    worst = 0.0
    for way, model in models.items():
        if way == NO_BIAS:
            continue
        grads = torch.autograd.grad(model.loss(x), [p for layer in model.layers for p in layer])
        for k, (grad, expected) in enumerate(zip(grads, reference)):
            error = float((grad - expected).norm() / expected.norm().clamp_min(1e-30))
            if error > tolerance:
                raise AssertionError(f"{way}: the gradient of parameter {k} is off autograd's by {error:.3g} "
                                     "(relative)")  # fmt: skip
            worst = max(worst, error)
    return worst


def time_round_robin(steps: dict[str, Callable[[], None]], rounds: int, repeats: int) -> dict[str, list[float]]:
    """Seconds a step of each, per round: `repeats` steps of one, then of the next, in turn."""
    for step in steps.values():  # warm-up: allocations, Adam's state
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(repeats):
                step()
            times[name].append((time.perf_counter() - start) / repeats)
    return times


# torch.profiler's op names, by what a way's time goes to (anything else: "other").
PROFILE_KINDS = {
    "products": ("aten::mm", "aten::addmm", "aten::addmm_"),
    "coupling kernels": ("nf_kernels_ext::coupling_forward", "nf_kernels_ext::coupling_backward"),
    "copies": ("aten::copy_",),
}


def profile_ways(steps: dict[str, Callable[[], None]], repeats: int = 5, passes: int = 2) -> dict[str, dict[str, float]]:
    """Seconds of self time a step, by PROFILE_KINDS and "other", for each way: torch.profiler over `repeats` steps,
    every way in turn, `passes` times; each way keeps its least disturbed pass (the least total), so the first way
    profiled does not pay for the profiler's own start-up."""
    from torch.profiler import ProfilerActivity, profile

    out: dict[str, dict[str, float]] = {}
    for _ in range(passes):
        for name, step in steps.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(repeats):
                    step()
            kinds = dict.fromkeys([*PROFILE_KINDS, "other"], 0.0)
            for event in prof.key_averages():
                kind = next((k for k, names in PROFILE_KINDS.items() if event.key in names), "other")
                kinds[kind] += event.self_cpu_time_total / 1e6 / repeats
            if name not in out or sum(kinds.values()) < sum(out[name].values()):
                out[name] = kinds
    return out


def report(times: dict[str, list[float]], settings: str, worst: float, argv: list[str],
           profiles: Optional[dict[str, dict[str, float]]] = None) -> str:  # fmt: skip
    base = times[SEPARATE]
    lines = [
        "# Fusing the last linear layer into the coupling: " + cpu_name(),
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}, commit "
        f"`{git_commit()}`, torch {torch.__version__}, {torch.get_num_threads()} thread(s)",
        f"- {settings}",
        "- command: `python " + " ".join(["benchmarks/fused_epilogue.py", *argv]) + "`",
        f"- gradients against plain autograd's (the linear layers and nf_kernels.affine_coupling): largest relative "
        f"error {worst:.2g} (the no-bias bound not compared)",
        "",
        "| way | step ms (median) | separate / way (median of rounds) | range |",
        "|---|---|---|---|",
    ]
    for name, values in times.items():
        ratios = [b / v for b, v in zip(base, values)]
        lines.append(f"| {name} | {statistics.median(values) * 1e3:.2f} | {statistics.median(ratios):.3f}x | "
                     f"{min(ratios):.3f}-{max(ratios):.3f} |")  # fmt: skip
    if profiles:
        kinds = list(next(iter(profiles.values())))
        lines += ["", "Where the time goes (torch.profiler, self time, ms a step; the profiler adds its own cost):", "",
                  "| way | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]  # fmt: skip
        for name, seconds in profiles.items():
            lines.append(f"| {name} | " + " | ".join(f"{seconds[k] * 1e3:.2f}" for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--couplings", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rows", type=int, nargs="*", default=[16, 32, 64], help="block sizes of the tiled way")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps of one way in a row, per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also break each way's step down by op kind")
    parser.add_argument("--out", type=Path, help="write <machine>-<date>-fused-epilogue.md there")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    module, why = load()
    if module is None:
        raise SystemExit(why)
    torch.set_num_threads(args.threads)
    nf_kernels.keep_freed_cpu_memory()  # as the training-step benchmark: steps reuse their memory
    ways = [SEPARATE, *(rows_way(r) for r in args.rows), BIAS_IN_PRODUCT, NO_BIAS]
    layouts = coupling_layouts(args.batch, args.features, args.couplings)
    models = {way: Model(initial_layers(args.features, args.hidden, args.couplings), way, layouts)
              for way in ways}  # fmt: skip
    x = torch.randn(args.batch, args.features, generator=torch.Generator().manual_seed(1))
    worst = check_agreement(models, x)
    steps = {way: (lambda m=model: m.step(x)) for way, model in models.items()}
    times = time_round_robin(steps, args.rounds, args.steps)
    profiles = profile_ways(steps) if args.profile else None
    settings = (f"D={args.features}, {args.couplings} couplings, hidden {args.hidden}, batch {args.batch}, tanh "
                f"scale, float32; {args.rounds} rounds of {args.steps} steps a way")  # fmt: skip
    text = report(times, settings, worst, argv, profiles)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        day = datetime.date.today().isoformat()
        path = args.out / f"{machine_slug(torch.device('cpu'))}-{day}-fused-epilogue.md"
        path.write_text(text)
        print(f"wrote {path}")
    return text


if __name__ == "__main__":
    main()
