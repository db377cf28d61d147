"""Output allocation for the fused backends, with a poisoning switch for tests.

Kernels must write every element of their outputs. Under :func:`poison_outputs`, new outputs start as NaN
instead of uninitialized memory, so an element a kernel forgets to write fails the comparison with the
reference instead of passing by luck (uninitialized memory is often zero).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

_poison = False


def new_output(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    if _poison:
        out.fill_(float("nan"))
    return out


def poisoning() -> bool:
    return _poison


@contextlib.contextmanager
def poison_outputs(enabled: bool = True) -> Iterator[None]:
    """Within this block, fused backends fill their outputs with NaN before the kernels write them.

    For tests: an output element a kernel forgets to write then shows as NaN instead of passing by luck.

    Args:
        enabled: poison (default True) or, nested inside a poisoning block, stop poisoning.

    >>> import torch, nf_kernels
    >>> with nf_kernels.poison_outputs():
    ...     y, _ = nf_kernels.affine_coupling(torch.randn(2, 4), torch.randn(2, 4))
    >>> bool(y.isnan().any())
    False
    """
    global _poison
    previous, _poison = _poison, enabled
    try:
        yield
    finally:
        _poison = previous
