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

**The spline op** (SPEC section 1b's cost model) reads ``x`` and ``P = 3K - 1`` parameters per transformed
element: per element of itemsize ``e``,

=============  =================  ====================
element        forward, inverse   backward
=============  =================  ====================
transformed    (2 + P) e          (3 + 2P) e          (x in, y out, P params in; grad_y, x, grad_x, P in, P out)
kept           2 e                3 e                 (a copy; the backward counts ``x`` whole, as the SPEC does)
=============  =================  ====================

plus ``logdet`` (forward) or ``grad_logdet`` (backward), one float a sample. Nothing of size ``T x K`` counts: the
knots are recomputed, never stored. The peers (nflows, zuko) are given the transformed elements alone, so their
count has no kept elements (``kept_half=False``).
"""

from __future__ import annotations

import math

from .._arguments import logdet_dtype
from .cases import OpCase
from .spline_cases import SplineOpCase


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


def spline_forward_bytes(case: SplineOpCase, kept_half: bool = True) -> int:
    """Bytes read and written by a fused spline forward (or inverse) of `case`; without the kept half's copy when
    not `kept_half`.

    >>> case = SplineOpCase("forward", "fp32", 2, 6, features=3)  # 2 samples of 3 kept and 3 transformed, P = 5
    >>> spline_forward_bytes(case), spline_forward_bytes(case, kept_half=False)  # (12 * 2 + 6 * 5) * 4 + 2 * 4
    (224, 176)
    """
    item = case.torch_dtype.itemsize
    kept = case.elements if kept_half else 0
    per_sample = logdet_dtype(case.torch_dtype).itemsize
    return (2 * (case.elements + kept) + case.per_element * case.elements) * item + case.batch * per_sample


def spline_backward_bytes(case: SplineOpCase, kept_half: bool = True) -> int:
    """Bytes read and written by a fused spline backward of `case` (see the module docstring).

    >>> spline_backward_bytes(SplineOpCase("forward+backward", "fp32", 2, 6, features=3))  # (36 + 60) * 4 + 8
    392
    """
    item = case.torch_dtype.itemsize
    kept = case.elements if kept_half else 0
    per_sample = logdet_dtype(case.torch_dtype).itemsize
    return (3 * (case.elements + kept) + 2 * case.per_element * case.elements) * item + case.batch * per_sample


def spline_bytes_moved(case: SplineOpCase, kept_half: bool = True) -> int:
    """The byte count of the whole timed spline call: forward (or inverse), plus the backward if it is timed."""
    backward = spline_backward_bytes(case, kept_half) if case.backward else 0
    return spline_forward_bytes(case, kept_half) + backward
