"""The device the pytest-benchmark suite runs on, and a synchronizing wrapper for timing GPU work.

Kept out of conftest.py so the test files can import it by a name no other conftest shares (`pytest tests
benchmarks` loads two conftest modules).
"""

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronized(fn):
    """`fn` followed by a device synchronization, so pytest-benchmark's wall clock covers the GPU work."""
    if DEVICE.type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(DEVICE)
        return out

    return call
