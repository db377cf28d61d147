"""Regression benchmarks of a training step (pytest-benchmark): RealNVP and Glow, reference against the fused
backends, standard and memory-saving. Sizes: 3x32x32 images, batch 64, on a GPU; 3x16x16, batch 16, on the CPU."""

import pytest
import torch
from bench_device import DEVICE, synchronized

from nf_kernels.benchmarking.model_runner import (
    BENCHMARKED_MODELS, DEFAULT_BATCH, DEFAULT_SHAPE, model_backends, training_step,
)  # fmt: skip
from nf_kernels.flows import build_model

BATCH, SHAPE = DEFAULT_BATCH[DEVICE.type], DEFAULT_SHAPE[DEVICE.type]


@pytest.mark.parametrize("memory_saving", [False, True], ids=["standard", "memory-saving"])
@pytest.mark.parametrize("backend", model_backends(DEVICE))
@pytest.mark.parametrize("model", BENCHMARKED_MODELS)
def test_training_step(benchmark, device, model, backend, memory_saving):
    torch.manual_seed(0)
    flow = build_model(model, SHAPE, backend=backend, memory_saving=memory_saving).to(device)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-4)
    x = torch.rand(BATCH, *SHAPE, device=device)
    step = synchronized(training_step(flow, optimizer, x))
    step()  # data-dependent initialization, kernel compilation
    benchmark.group = f"{model} {'memory-saving' if memory_saving else 'standard'}"
    benchmark.extra_info["batch"] = BATCH
    loss = benchmark(step)
    assert torch.isfinite(loss)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["samples_per_s_at_median"] = BATCH / benchmark.stats.stats.median
