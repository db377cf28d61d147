"""Learning rate: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import functools
import math

import torch


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, final_ratio: float) -> float:
    """The LR multiplier at ``step`` (0-based, the step about to run).

    Warm-up climbs linearly over ``warmup_steps`` (starting above 0, so step 0 still learns), then a half cosine
    takes the multiplier from 1 down to ``final_ratio`` at ``total_steps``.

    >>> [round(warmup_cosine(s, warmup_steps=2, total_steps=6, final_ratio=0.0), 3) for s in range(7)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146, 0.0]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int, final_ratio: float = 0.01
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over :func:`warmup_cosine`; its state_dict (the step count) goes into checkpoints."""
    schedule = functools.partial(
        warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps, final_ratio=final_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
