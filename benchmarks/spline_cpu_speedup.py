"""The fused CPU spline op against nflows' eager rational-quadratic spline, forward + backward, on the CPU.

Both get the same transformed elements and parameters and the same loss, sum(y) + sum(logdet), so that the
backward computes the gradients of x and of every parameter. Two layouts of the op's input (`--layout`):
"vector", x [B, 2D] with mask "half" (D transformed features, their parameters [B, D * (3K - 1)] as nflows'
conditioner lays them out, each element's 3K - 1 side by side) and "channel", x [B, 1, D] (the one channel all
transformed, parameters [B, 3K - 1, D]: parameter j of consecutive elements side by side). nflows gets the
transformed [B, D] and [B, D, 3K - 1]. Timed round-robin (one call of each in turn, after a warm-up), median of
`--rounds`, at 1 and 2 threads.

    python benchmarks/spline_cpu_speedup.py                     # 2^20 elements, 8 bins, fp32, both layouts
    python benchmarks/spline_cpu_speedup.py --log2-elements 18 --bins 16 --threads 1 --layout vector

Issue 14's goal: the fused `cpu` forward + backward >= 5x nflows' eager at 2^20 elements, 8 bins, fp32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmark the checkout this script belongs to

import torch  # noqa: E402
from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline  # noqa: E402

from nf_kernels._spline_arguments import SplineConfig  # noqa: E402
from nf_kernels.backends.extension import CPU_BACKEND  # noqa: E402

BOUND = 3.0


def _config(bins: int) -> SplineConfig:
    return SplineConfig("half", False, bins, BOUND, 1e-3, 1e-3, 1e-3, False)


def fused_step(x, params, config):
    """Forward and backward of the fused op."""
    y, logdet = CPU_BACKEND.spline_forward(x, params, None, config)
    return CPU_BACKEND.spline_backward(torch.ones_like(y), torch.ones_like(logdet), x, params, None, config)


def inputs(layout: str, batch: int, features: int, bins: int, seed: int = 0):
    """(x, params) of the op and (x, params) of nflows, the same numbers."""
    g = torch.Generator().manual_seed(seed)
    per = 3 * bins - 1
    transformed = torch.randn(batch, features, generator=g)
    grouped = torch.randn(batch, features, per, generator=g)  # nflows' [B, D, P]
    if layout == "vector":
        x = torch.cat([torch.randn(batch, features, generator=g), transformed], 1)
        return x, grouped.reshape(batch, -1), transformed, grouped
    return transformed.view(batch, 1, features), grouped.transpose(1, 2).contiguous(), transformed, grouped


def gradient_of_x(layout: str, grad_x: torch.Tensor, features: int) -> torch.Tensor:
    return grad_x[:, features:] if layout == "vector" else grad_x.view(grad_x.shape[0], -1)


def nflows_step(x, params, bins):
    x = x.detach().requires_grad_(True)
    params = params.detach().requires_grad_(True)
    y, logabsdet = unconstrained_rational_quadratic_spline(
        x, params[..., :bins], params[..., bins : 2 * bins], params[..., 2 * bins :], tails="linear",
        tail_bound=BOUND,
    )
    (y.sum() + logabsdet.sum()).backward()
    return x.grad, params.grad


def median_times(steps, rounds: int) -> list[float]:
    for step in steps:  # warm-up
        step()
    times = [[] for _ in steps]
    for _ in range(rounds):
        for i, step in enumerate(steps):
            start = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log2-elements", type=int, default=20, help="transformed elements in all")
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--features", type=int, default=64, help="D; the batch is elements / D")
    parser.add_argument("--layout", choices=("vector", "channel"), nargs="+", default=["vector", "channel"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    elements, bins, features = 2**args.log2_elements, args.bins, args.features
    batch = elements // features
    config = _config(bins)
    print(f"spline forward+backward, {elements} transformed elements ([{batch}, {features}]), {bins} bins, float32")
    print("| layout | threads | nflows eager (ms) | nf_kernels cpu (ms) | speed-up |")
    print("|---|---|---|---|---|")
    previous = torch.get_num_threads()
    try:
        for layout in args.layout:
            x, params, x_nflows, params_nflows = inputs(layout, batch, features, bins)
            # The same numbers, to float32 rounding (each is some 3e-4 off float64 in the norm, nflows more).
            grad_x = gradient_of_x(layout, fused_step(x, params, config)[0], features)
            grad_x_nflows = nflows_step(x_nflows, params_nflows, bins)[0]
            error = (grad_x - grad_x_nflows).norm() / grad_x_nflows.norm()
            assert error < 2e-3, f"the two disagree: relative error {error:.3g}"
            for threads in args.threads:
                torch.set_num_threads(threads)
                steps = [lambda: nflows_step(x_nflows, params_nflows, bins), lambda: fused_step(x, params, config)]
                nflows_time, fused_time = median_times(steps, args.rounds)
                print(f"| {layout} | {threads} | {nflows_time * 1e3:.1f} | {fused_time * 1e3:.1f} | "
                      f"{nflows_time / fused_time:.1f}x |")  # fmt: skip
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    main()
