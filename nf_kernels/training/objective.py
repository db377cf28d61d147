"""What training minimizes and evaluation reports: bits/dim for discrete data, NLL in nats for continuous data."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..data import FlowDataset, dequantize
from ..flows import bits_per_dim
from .precision import PRECISIONS, Precision

# Test-set dequantization noise comes from this fixed seed, so test numbers are comparable across runs and seeds.
EVAL_NOISE_SEED = 1_234_567


def metric_name(data: FlowDataset) -> str:
    """``"bits_per_dim"`` for discrete data, ``"nll"`` (nats per sample) for continuous data."""
    return "bits_per_dim" if data.discrete else "nll"


def loss_from_log_prob(log_prob: torch.Tensor, data: FlowDataset) -> torch.Tensor:
    """Mean bits/dim (discrete) or mean negative log-likelihood in nats (continuous) of a batch."""
    if log_prob.dtype in (torch.float16, torch.bfloat16):  # autocast may hand back a low-precision log-density
        log_prob = log_prob.float()
    if data.discrete:
        return bits_per_dim(log_prob, data.num_dims, data.levels).mean()
    return -log_prob.mean()


class LogProb(nn.Module):
    """``flow.log_prob`` as a module's ``forward``, so DistributedDataParallel can wrap it and hook the backward."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.flow.log_prob(x, context)


@torch.no_grad()
def evaluate(
    flow: nn.Module,
    data: FlowDataset,
    *,
    batch_size: int = 1024,
    device: torch.device = torch.device("cpu"),
    conditional: bool = False,
    precision: Precision = PRECISIONS["fp32"],
) -> float:
    """The test-set metric (:func:`metric_name`) of ``flow``: mean over every test sample.

    >>> from nf_kernels.data import load_dataset
    >>> class Normal(nn.Module):
    ...     def log_prob(self, x, context=None):
    ...         return torch.distributions.Normal(0.0, 2.0).log_prob(x).sum(1)
    >>> round(evaluate(Normal(), load_dataset("moons")), 2)
    3.74
    """
    was_training = flow.training
    flow.eval()
    total, count = 0.0, 0
    generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
    for start in range(0, len(data.test), batch_size):
        samples = data.test[start : start + batch_size]
        if data.discrete:
            samples = dequantize(samples, data.levels, torch.rand(samples.shape, generator=generator))
        labels = data.test_labels[start : start + batch_size].to(device) if conditional else None
        with precision.forward_context(device):
            log_prob = flow.log_prob(samples.to(device, precision.parameters), labels)
        total += loss_from_log_prob(log_prob, data).item() * len(samples)
        count += len(samples)
    flow.train(was_training)
    return total / count
