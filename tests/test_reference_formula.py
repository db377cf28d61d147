"""The oracle against the SPEC itself: the "reference" backend, element by element, against the formulas of
docs/spec.md section 1 evaluated with Python's math module in float64 on tiny inputs.

Every other backend is checked against "reference" (tests/test_coupling_numerics.py); this file is what keeps the
reference honest. It shares no code with the library: the mask rules, the layout of `h` and the scale maps are
written out again from the SPEC, one element at a time.
"""

import dataclasses
import itertools
import math

import pytest
import torch

from conftest import MASK_CASES, all_couplings

CASES = all_couplings()


def _log_sigmoid(v: float) -> float:
    """log(sigmoid(v)), written so that neither sign overflows."""
    return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))


def _log_scale(scale: str, s: float, clamp) -> float:
    if scale == "exp":
        return s
    if scale == "tanh":
        return clamp * math.tanh(s / clamp)
    if scale == "atan":
        return clamp * (2 / math.pi) * math.atan(s / clamp)
    if scale == "sigmoid":
        return _log_sigmoid(s + 2.0)
    if scale == "rsigmoid":
        return -_log_sigmoid(s + 2.0)
    if scale == "nflows_sigmoid":
        return math.log(1.0 / (1.0 + math.exp(-(s + 2.0))) + 1e-3)
    if scale == "softclamp":
        return s / (1.0 + abs(s) / clamp)
    if scale == "clip":
        low, high = clamp
        return min(max(s, low), high)
    if scale == "freia_atan":
        return clamp * 0.636 * math.atan(s)
    if scale == "freia_tanh":
        return clamp * math.tanh(s)
    assert scale == "freia_sigmoid", scale
    return clamp * 2.0 * (1.0 / (1.0 + math.exp(-s)) - 0.5)


def _kept(case, mask, index) -> bool:
    """SPEC mask table: is element `index` (a sample's multi-index, channel first) kept?"""
    channel = index[0]
    channels = case.mask.shape[1]
    if case.mask.name == "half":
        kept = channel < channels // 2 if not case.flip else channel >= channels - channels // 2
        return kept
    if case.mask.name == "checkerboard":
        i, j = index[1], index[2]
        return (i + j) % 2 == (0 if case.flip else 1)
    return bool(mask[index]) != case.flip


def _s_and_t(case, h, b, index, rank):
    """s_raw and t of element `index`: by the h_layout table, at the element's position among the transformed
    channels ("half"), its own position (the other masks), or its rank among the transformed elements (a compact h,
    whose h has dim 1 = 2K (or K) and the rest of its shape its own)."""
    channels = case.mask.shape[1]
    channel, rest = index[0], tuple(index[1:])
    if case.mask.name == "half":
        first_transformed = 0 if case.flip else channels // 2
        channel -= first_transformed
    if case.mask.name == "compact":
        per_channel = math.prod(h.shape[2:])
        channel, flat = divmod(rank, per_channel)
        rest = tuple(_unravel(flat, h.shape[2:]))
    if case.additive:
        return None, h[(b, channel, *rest)]
    half = h.shape[1] // 2
    s_channel, t_channel = {
        "scale_shift": (channel, half + channel),
        "shift_scale": (half + channel, channel),
        "shift_scale_pairs": (2 * channel + 1, 2 * channel),
    }[case.h_layout]
    return h[(b, s_channel, *rest)], h[(b, t_channel, *rest)]


def _unravel(flat: int, shape) -> list[int]:
    out = []
    for size in reversed(shape):
        flat, i = divmod(flat, size)
        out.append(i)
    return out[::-1]


def spec_formula(case, x: torch.Tensor, h: torch.Tensor, mask):
    """(y, logdet) of SPEC section 1, one element at a time, in Python floats."""
    x_at, h_at = _Getter(x.tolist(), h.shape), _Getter(h.tolist(), h.shape)
    y, logdet = [], []
    for b in range(x.shape[0]):
        total, values, rank = 0.0, [], 0
        for index in itertools.product(*(range(n) for n in x.shape[1:])):
            value = x_at[(b, *index)]
            if not _kept(case, mask, index):
                s, t = _s_and_t(case, h_at, b, index, rank)
                rank += 1
                if case.additive:
                    value = value - t if case.reverse else value + t
                else:
                    a = _log_scale(case.scale, s, case.clamp_arg)
                    if not case.reverse:
                        value = (value + t) * math.exp(a) if case.shift_first else value * math.exp(a) + t
                        total += a
                    else:
                        value = value * math.exp(-a) - t if case.shift_first else (value - t) * math.exp(-a)
                        total -= a
            values.append(value)
        y.append(values)
        logdet.append(total)
    return torch.tensor(y, dtype=torch.float64).view(x.shape), torch.tensor(logdet, dtype=torch.float64)


def _get(nested, index):
    for i in index:
        nested = nested[i]
    return nested


class _Getter:
    """h[(b, c, ...)] on nested lists, and h.shape."""

    def __init__(self, nested, shape):
        self.nested = nested
        self.shape = tuple(shape)

    def __getitem__(self, index):
        return _get(self.nested, index)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_matches_the_spec_formulas(case):
    x, h = case.inputs(torch.float64, seed=7)
    mask = case.mask.mask()
    y, logdet = case(x, h, "reference", mask=mask)
    y_spec, logdet_spec = spec_formula(case, x, h, mask)
    torch.testing.assert_close(y, y_spec, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(logdet, logdet_spec, rtol=1e-12, atol=1e-12)


def test_the_formulas_see_a_wrong_mask():
    """The comparison can fail: the reference with the opposite flip disagrees with the formulas."""
    case = next(c for c in CASES if c.mask == MASK_CASES[2] and c.scale == "exp" and not c.flip)
    x, h = case.inputs(torch.float64, seed=7)
    y, _ = case(x, h, "reference")
    flipped = dataclasses.replace(case, flip=True)
    y_spec, _ = spec_formula(flipped, x, h, case.mask.mask())
    assert not torch.allclose(y, y_spec)


def test_the_formulas_see_a_wrong_h_layout():
    """The comparison can fail on the layout too: reading pairs as halves disagrees."""
    case = next(c for c in CASES if c.mask == MASK_CASES[0] and c.h_layout == "shift_scale_pairs" and not c.additive)
    x, h = case.inputs(torch.float64, seed=7)
    y, _ = case(x, h, "reference")
    y_spec, _ = spec_formula(dataclasses.replace(case, h_layout="shift_scale"), x, h, None)
    assert not torch.allclose(y, y_spec)
