"""The spline coupling op against nflows' own spline, eager, on one CPU thread (issue 14's op-level comparison).

For T transformed elements (x of [T / 8, 16], mask "half": 8 transformed features a sample), K bins, fp32: the
median time of forward, inverse and forward+backward (a loss of y and the log-det) of
`nf_kernels.spline_coupling` with each backend that has spline kernels here, and of nflows'
`unconstrained_rational_quadratic_spline(tails="linear")` on the same numbers (the transformed half only, which
favours nflows: no copy of the kept half). Same inputs, alternating calls, after a warm-up.

    python benchmarks/spline_op.py                          # T = 2^16, K = 8
    python benchmarks/spline_op.py --elements 1048576 --bins 8 16 --rounds 5

The issue's goal (CPU, 2^20 elements, 8 bins, fp32): the fused "cpu" forward+backward >= 5x nflows' eager.
A torch.compile column and the byte model are not here yet (nf_kernels/benchmarking's op cases are affine only).
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
from nf_kernels import _dispatch  # noqa: E402

FEATURES = 16  # 8 kept, 8 transformed


def _nflows(x, params, bins, inverse):
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    batch = x.shape[0]
    p = params.view(batch, FEATURES // 2, 3 * bins - 1)
    out, log_slopes = unconstrained_rational_quadratic_spline(
        x[:, FEATURES // 2 :], p[..., :bins], p[..., bins : 2 * bins], p[..., 2 * bins :], inverse=inverse,
        tails="linear", tail_bound=3.0,
    )  # fmt: skip
    return out, log_slopes.sum(1)


def _runner(name, bins, direction):
    def call(x, params):
        reverse = direction == "inverse"
        if name == "nflows":
            return _nflows(x, params, bins, reverse)
        return nf_kernels.spline_coupling(x, params, bins=bins, reverse=reverse, backend=name)

    def run(x, params):
        if direction != "forward+backward":
            with torch.no_grad():
                return call(x, params)
        x, params = x.detach().requires_grad_(True), params.detach().requires_grad_(True)
        y, logdet = call(x, params)
        (y.sum() + logdet.sum()).backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=2**16, help="transformed elements T")
    parser.add_argument("--bins", type=int, nargs="+", default=[8])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    backends = [b for b in ("cpu", "triton", "reference") if _dispatch.why_unavailable(b, torch.device("cpu")) is None
                and _dispatch.why_spline_unsupported(b) is None]  # fmt: skip
    print(f"T = {args.elements} transformed elements, fp32, 1 thread; median of {args.rounds} rounds (ms)")
    print(f"{'bins':>4} {'direction':<17} " + " ".join(f"{n:>10}" for n in [*backends, "nflows"]) + "  nflows/best")
    for bins in args.bins:
        g = torch.Generator().manual_seed(0)
        batch = args.elements // (FEATURES // 2)
        x = 2 * torch.randn(batch, FEATURES, generator=g)
        params = torch.randn(batch, FEATURES // 2 * (3 * bins - 1), generator=g)
        for direction in ("forward", "inverse", "forward+backward"):
            runners = {n: _runner(n, bins, direction) for n in [*backends, "nflows"]}
            times = {n: [] for n in runners}
            for n, run in runners.items():  # warm-up
                run(x, params)
            for _ in range(args.rounds):
                for n, run in runners.items():
                    start = time.perf_counter()
                    run(x, params)
                    times[n].append(time.perf_counter() - start)
            medians = {n: 1e3 * statistics.median(t) for n, t in times.items()}
            best = min(medians[n] for n in backends)
            print(f"{bins:>4} {direction:<17} " + " ".join(f"{medians[n]:>10.2f}" for n in runners)
                  + f"  {medians['nflows'] / best:>10.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
