"""The SPEC's cost model (section 4): how many bytes an ideal fused kernel moves, which turns a time into GB/s.

The rule: every tensor the math needs is read once, whole, and every output is written once, whole.

* forward and inverse read ``x`` and ``h`` and write ``y`` and ``logdet``;
* the affine backward reads ``grad_y``, ``x``, ``h`` and ``grad_logdet`` and writes ``grad_x`` and ``grad_h``;
* the additive backward needs neither ``x`` nor ``t`` (``grad_x = grad_y``, ``grad_t`` = ``grad_y`` at the
  transformed elements), so it reads ``grad_y`` and writes ``grad_x`` and ``grad_t``;
* forward+backward is the sum of the two.

With ``N = B * C * H * W`` elements of itemsize ``e`` (the tiny ``logdet`` terms left out):

=============  ===========  =========  =========
op             mask         forward    backward
=============  ===========  =========  =========
affine         half         3 N e      5 N e      (the SPEC's figures)
affine         checkerboard 4 N e      7 N e      (``h`` is twice the size of ``x``)
additive       half         2.5 N e    2.5 N e
additive       checkerboard 3 N e      3 N e
=============  ===========  =========  =========

Checkerboard ``h`` counts whole although half of its values are ignored: the kept and transformed positions
alternate element by element, so every cache line of ``h`` holds values the kernel needs. The "half" backward
counts ``x`` whole as the SPEC does; a kernel that reads only its transformed half moves 4.5 N e, so its
fraction of the copy bandwidth would read about 10% lower under that stricter count.
"""

from __future__ import annotations

import math

from .._arguments import logdet_dtype
from .cases import OpCase


def _nbytes(shape, itemsize: int) -> int:
    return math.prod(shape) * itemsize


def forward_bytes(case: OpCase) -> int:
    """Bytes read and written by a fused forward (or inverse): x, h in; y, logdet out.

    >>> case = OpCase("affine", "forward", "half", "fp32", 2**20)  # 64 samples of 4x64x64
    >>> forward_bytes(case) == 3 * 2**20 * 4 + 64 * 4
    True
    """
    item = case.torch_dtype.itemsize
    logdet_item = logdet_dtype(case.torch_dtype).itemsize
    batch = case.shape[0]
    return 2 * _nbytes(case.shape, item) + _nbytes(case.h_shape, item) + batch * logdet_item


def backward_bytes(case: OpCase) -> int:
    """Bytes read and written by a fused backward (see the module docstring for what each op needs)."""
    item = case.torch_dtype.itemsize
    x_bytes, h_bytes = _nbytes(case.shape, item), _nbytes(case.h_shape, item)
    if case.additive:
        return 2 * x_bytes + h_bytes  # grad_y in, grad_x and grad_t out
    grad_logdet = case.shape[0] * logdet_dtype(case.torch_dtype).itemsize
    return 3 * x_bytes + 2 * h_bytes + grad_logdet  # grad_y, x, h, grad_logdet in; grad_x, grad_h out


def bytes_moved(case: OpCase) -> int:
    """The SPEC byte count of the whole timed call: forward (or inverse), plus the backward if it is timed."""
    return forward_bytes(case) + (backward_bytes(case) if case.backward else 0)
