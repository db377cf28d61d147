"""The classic 2-D toy densities, generated from a seed (no downloads), each spread over roughly [-4, 4]^2.

Shapes follow the ones used across the flow literature (two moons, circles, 8 gaussians, checkerboard, two
spirals); every generator takes ``(count, generator)`` and returns a float32 tensor ``[count, 2]``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

ToyGenerator = Callable[[int, torch.Generator], torch.Tensor]


def _uniform(count: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(count, generator=generator)


def _two_halves(count: int, first: torch.Tensor, second: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shuffle ``count`` points, half from each component, so every prefix is a fair mix."""
    points = torch.cat([first[: count - count // 2], second[: count // 2]])
    return points[torch.randperm(count, generator=generator)]


def moons(count: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaving half circles with Gaussian noise."""
    angle = _uniform(count, generator) * math.pi
    upper = torch.stack([angle.cos(), angle.sin()], dim=1)
    lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], dim=1)
    points = _two_halves(count, upper, lower, generator)
    points = points + 0.08 * torch.randn(count, 2, generator=generator)
    return (points - torch.tensor([0.5, 0.25])) * 2.0


def circles(count: int, generator: torch.Generator) -> torch.Tensor:
    """Two concentric noisy rings, radii 3 and 1.5."""
    angle = _uniform(count, generator) * 2 * math.pi
    ring = torch.stack([angle.cos(), angle.sin()], dim=1)
    points = _two_halves(count, 3.0 * ring, 1.5 * ring, generator)
    return points + 0.1 * torch.randn(count, 2, generator=generator)


def eight_gaussians(count: int, generator: torch.Generator) -> torch.Tensor:
    """Eight Gaussians (std 0.35) evenly spaced on a circle of radius 2.8."""
    which = torch.randint(0, 8, (count,), generator=generator)
    angle = which.float() * (2 * math.pi / 8)
    centers = 2.8 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centers + 0.35 * torch.randn(count, 2, generator=generator)


def checkerboard(count: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform over the black squares of a 4x4 board covering [-4, 4]^2."""
    x = _uniform(count, generator) * 4 - 2
    row_in_pair = _uniform(count, generator) - 2 * torch.randint(0, 2, (count,), generator=generator).float()
    y = row_in_pair + torch.floor(x) % 2
    return 2.0 * torch.stack([x, y], dim=1)


def spirals(count: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaved spiral arms (1.5 turns each), point-symmetric about the origin."""
    turn = torch.sqrt(_uniform(count, generator)) * 3 * math.pi
    arm = torch.stack([-turn.cos() * turn, turn.sin() * turn], dim=1)
    arm = arm + 0.5 * torch.rand(count, 2, generator=generator)
    points = _two_halves(count, arm, -arm, generator)
    return points / 3.0 + 0.1 * torch.randn(count, 2, generator=generator)


TOYS: dict[str, ToyGenerator] = {
    "moons": moons,
    "circles": circles,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "spirals": spirals,
}


def make_toy(name: str, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` points of the toy ``name``, the same for the same seed.

    >>> make_toy("moons", 4, seed=0).shape
    torch.Size([4, 2])
    """
    return TOYS[name](count, torch.Generator().manual_seed(seed)).float()
