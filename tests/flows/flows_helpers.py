"""Helpers shared by the flow tests: random (non-identity) parameters, Jacobians, tiny models."""

from __future__ import annotations

import torch
from torch import nn

from nf_kernels.flows import MODEL_SIZES, build_model, sizes_used

# Tiny sizes: every model builds and runs in well under a second, also under the Triton interpreter.
TINY = dict(num_layers=2, num_scales=2, num_steps=1, final_steps=1, hidden=8, depth=1, context_features=4)
VECTOR_SHAPE, IMAGE_SHAPE = (3,), (2, 4, 4)


def tiny_sizes(name: str, shape, **overrides) -> dict:
    """TINY and `overrides`, less the sizes model `name` does not use for `shape` (the builders reject those)."""
    used = sizes_used(name, shape)
    return {k: v for k, v in {**TINY, **overrides}.items() if k not in MODEL_SIZES or k in used}


def perturb(module: nn.Module, std: float = 0.1, seed: int = 0) -> nn.Module:
    """Add noise to every parameter, so zero-initialized conditioners do something (the identity hides bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def tiny_model(name: str, shape, backend: str = "reference", seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    flow = build_model(name, shape, backend=backend, **tiny_sizes(name, shape, **overrides))
    flow.eval()  # ActNorm keeps its (perturbed) parameters instead of initializing from data
    return perturb(flow, seed=seed)


def log_abs_det_jacobian(fn, x: torch.Tensor) -> torch.Tensor:
    """log|det d fn(x_b) / d x_b| for each sample b, from the full autograd Jacobian (float64, small shapes)."""
    results = []
    for b in range(x.shape[0]):
        sample = x[b : b + 1]

        def flat(v):
            return fn(v.reshape(sample.shape)).reshape(-1)

        jacobian = torch.autograd.functional.jacobian(flat, sample.reshape(-1))
        results.append(torch.linalg.slogdet(jacobian)[1])
    return torch.stack(results)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.double().norm().item()
    diff = (out.double() - ref.double()).norm().item()
    return diff / scale if scale > 0 else diff


def realnvp_after_steps(configure, x: torch.Tensor, steps: int = 4) -> torch.Tensor:
    """The parameters of a small seeded RealNVP (3 couplings, hidden 16) after `steps` Adam steps on `x`, once
    `configure(module)` has seen each of its modules (tests that switch a fused path on or off)."""
    torch.manual_seed(1)
    flow = build_model("realnvp", tuple(x.shape[1:]), num_layers=3, hidden=16)
    for module in flow.modules():
        configure(module)
    return parameters_after_steps(flow, x, torch.optim.Adam(flow.parameters(), lr=1e-2), steps=steps)


def parameters_after_steps(flow: nn.Module, x: torch.Tensor, optimizer: torch.optim.Optimizer, steps: int = 3):
    """`flow`'s parameters, flattened into one tensor, after `steps` steps of `optimizer` on the NLL of `x`."""
    for _ in range(steps):
        optimizer.zero_grad()
        (-flow.log_prob(x).mean()).backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in flow.parameters()])
