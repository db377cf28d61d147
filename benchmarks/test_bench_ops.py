"""Regression benchmarks of the coupling ops (pytest-benchmark): every provider on a few representative cases.

    pytest benchmarks/test_bench_ops.py --benchmark-columns=median,iqr,ops

Each result's extra_info carries the SPEC byte count and the achieved GB/s at the median, so saved runs can be
compared in bandwidth as well as in time. benchmarks/run.py is the full, side-by-side report.
"""

import pytest
import torch
from bench_device import DEVICE, synchronized

from nf_kernels.benchmarking.byte_model import bytes_moved
from nf_kernels.benchmarking.cases import OpCase
from nf_kernels.benchmarking.op_runner import timed_call
from nf_kernels.benchmarking.providers import PROVIDERS, make_provider

SIZE = 2**24 if DEVICE.type == "cuda" else 2**20
DTYPES = ["fp32", "bf16"] if DEVICE.type == "cuda" else ["fp32"]
CASES = [
    OpCase(op, direction, mask, dtype, SIZE)
    for dtype in DTYPES
    for op, direction, mask in [
        ("affine", "forward", "half"),
        ("affine", "forward+backward", "half"),
        ("affine", "forward+backward", "checkerboard"),
        ("additive", "forward", "half"),
    ]
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=OpCase.label)
def test_coupling_op(benchmark, device, case, provider):
    chosen = make_provider(provider)
    reason = chosen.why_unavailable(device)
    if reason is not None:
        pytest.skip(reason)
    x, h = case.inputs(device)
    if case.backward:
        x.requires_grad_(True)
        h.requires_grad_(True)
    call = synchronized(timed_call(chosen.coupling(case), case, x, h))
    call()  # compile, autotune and allocate before timing
    benchmark.group = case.label()
    benchmark.extra_info["bytes"] = bytes_moved(case)
    benchmark(call)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["gbps_at_median"] = bytes_moved(case) / benchmark.stats.stats.median / 1e9
    assert torch.isfinite(call()[0]).all()  # y, or grad_x when the backward is timed
