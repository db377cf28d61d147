"""pytest-benchmark suite setup (`pytest benchmarks`; not part of the CI test run, which collects `tests/` only).

The device is CUDA when torch sees one, else the CPU; timings compare the providers of each case side by side
(one pytest-benchmark group per case). Save and compare runs with pytest-benchmark's own options, e.g.
`pytest benchmarks --benchmark-autosave` then `pytest benchmarks --benchmark-compare`.
"""

import os
import sys
from pathlib import Path

# As in benchmarks/run.py: measure this checkout; idle OpenMP threads sleep (set before torch loads OpenMP).
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from bench_device import DEVICE  # noqa: E402
from nf_kernels import keep_freed_cpu_memory  # noqa: E402


def pytest_configure(config):
    if DEVICE.type == "cpu":
        keep_freed_cpu_memory()  # timings without page faults (nf_kernels/benchmarking/timing.py)


@pytest.fixture
def device() -> torch.device:
    return DEVICE
