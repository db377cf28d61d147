"""Launch geometry and dtype choices shared by the Triton launchers."""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

# Elements of one sample handled by one program. Tests lower it to force multi-block samples (the two-stage
# log-det reduction) at the small sizes the interpreter can afford.
MAX_BLOCK = 4096


class LaunchShape(NamedTuple):
    block: int  # elements per program, a power of two
    nblk: int  # programs per sample
    num_warps: int

    @classmethod
    def for_numel(cls, numel: int) -> "LaunchShape":
        block = min(MAX_BLOCK, max(16, triton.next_power_of_2(numel)))
        return cls(block, triton.cdiv(numel, block), 8 if block >= 2048 else 4)


def compute_tl_dtype(dtype: torch.dtype):
    """float32 arithmetic for every input dtype except float64 (SPEC: dtypes)."""
    return tl.float64 if dtype == torch.float64 else tl.float32
