"""The fused CPU spline op against nflows' eager rational-quadratic spline, forward + backward, on the CPU.

Both get the same [B, D] input (D transformed features, all of them: the op's parameters laid out as nflows'
conditioner output, [B, D * (3K - 1)]) and the same loss, sum(y) + sum(logdet), so that the backward computes the
gradients of x and of every parameter. Timed round-robin (one call of each in turn, after a warm-up), median of
`--rounds`, at 1 and 2 threads.

    python benchmarks/spline_cpu_speedup.py                     # 2^20 elements, 8 bins, fp32
    python benchmarks/spline_cpu_speedup.py --log2-elements 18 --bins 16 --threads 1

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

from nf_kernels.backends.extension import CPU_BACKEND  # noqa: E402

BOUND = 3.0


class _Config:
    """The spline config the backend reads (mask "half" over one channel of D features: every one transformed)."""

    def __init__(self, bins: int, reverse: bool = False):
        self.mask_kind, self.flip, self.bins, self.bound = "half", True, bins, BOUND
        self.min_bin_width = self.min_bin_height = self.min_derivative = 1e-3
        self.reverse = reverse


def fused_step(x, params, config):
    """Forward and backward of the fused op on x [B, 1, D] (one channel, all of it transformed: flip=True)."""
    y, logdet = CPU_BACKEND.spline_forward(x, params, None, config)
    grad_x, grad_params = CPU_BACKEND.spline_backward(torch.ones_like(y), torch.ones_like(logdet), x, params, None,
                                                      config)  # fmt: skip
    return grad_x, grad_params


def nflows_step(x, params, bins):
    x = x.detach().requires_grad_(True)
    params = params.detach().requires_grad_(True)
    p = params.view(*x.shape, 3 * bins - 1)
    y, logabsdet = unconstrained_rational_quadratic_spline(
        x, p[..., :bins], p[..., bins : 2 * bins], p[..., 2 * bins :], tails="linear", tail_bound=BOUND
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
    parser.add_argument("--log2-elements", type=int, default=20)
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--features", type=int, default=64, help="D; the batch is elements / D")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    elements, bins, features = 2**args.log2_elements, args.bins, args.features
    g = torch.Generator().manual_seed(0)
    x = torch.randn(elements // features, 1, features, generator=g)
    params = torch.randn(elements // features, 3 * bins - 1, features, generator=g)
    # nflows' layout: the parameters of an element contiguous ([B, D, P]); the op's for vectors is [B, P, D] viewed
    # per channel, so give each its own (the same numbers).
    params_nflows = params.permute(0, 2, 1).contiguous().view(x.shape[0], -1)
    config = _Config(bins)
    # The same numbers from both, to float32 rounding (each is some 3e-4 off float64 in the norm, nflows more).
    gx_fused, _ = fused_step(x, params, config)
    gx_nflows, _ = nflows_step(x.view(x.shape[0], -1), params_nflows, bins)
    error = (gx_fused.view_as(gx_nflows) - gx_nflows).norm() / gx_nflows.norm()
    assert error < 2e-3, f"the two disagree: relative error {error:.3g}"
    print(f"spline forward+backward, {elements} elements ([{x.shape[0]}, {features}]), {bins} bins, float32")
    print("| threads | nflows eager (ms) | nf_kernels cpu (ms) | speed-up |")
    print("|---|---|---|---|")
    previous = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            nflows_time, fused_time = median_times(
                [lambda: nflows_step(x.view(x.shape[0], -1), params_nflows, bins), lambda: fused_step(x, params, config)],
                args.rounds,
            )
            print(f"| {threads} | {nflows_time * 1e3:.1f} | {fused_time * 1e3:.1f} | {nflows_time / fused_time:.1f}x |")
    finally:
        torch.set_num_threads(previous)


if __name__ == "__main__":
    main()
