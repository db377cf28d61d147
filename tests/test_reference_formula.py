"""The oracle against the SPEC itself: the "reference" backend, element by element, against the formulas of
docs/spec.md section 1 evaluated with Python's math module in float64 on tiny inputs.

Every other backend is checked against "reference" (tests/test_coupling_numerics.py); this file is what keeps the
reference honest. It shares no code with the library: the mask rules, the layout of `h` and the scale maps are
written out again from the SPEC, one element at a time.
"""

import itertools
import math

import pytest
import torch

from conftest import MASK_CASES, all_couplings

CASES = all_couplings()


def _log_scale(scale: str, s: float, clamp: float) -> float:
    if scale == "exp":
        return s
    if scale == "tanh":
        return clamp * math.tanh(s / clamp)
    if scale == "atan":
        return clamp * (2 / math.pi) * math.atan(s / clamp)
    v = s + 2.0  # "sigmoid": log(sigmoid(v)), written so that neither sign overflows
    return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))


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


def _s_and_t(case, h, b, index):
    """s_raw and t of element `index`: the two halves of h along dim 1 (for "half", indexed by the transformed
    channel's position among the transformed channels)."""
    channels = case.mask.shape[1]
    channel = index[0]
    if case.mask.name == "half":
        first_transformed = 0 if case.flip else channels // 2
        channel -= first_transformed
    rest = tuple(index[1:])
    if case.additive:
        return None, h[(b, channel, *rest)]
    half = h.shape[1] // 2
    return h[(b, channel, *rest)], h[(b, half + channel, *rest)]


def spec_formula(case, x: torch.Tensor, h: torch.Tensor, mask):
    """(y, logdet) of SPEC section 1, one element at a time, in Python floats."""
    x_at, h_at = _Getter(x.tolist()), _Getter(h.tolist())
    y, logdet = [], []
    for b in range(x.shape[0]):
        total, values = 0.0, []
        for index in itertools.product(*(range(n) for n in x.shape[1:])):
            value = x_at[(b, *index)]
            if not _kept(case, mask, index):
                s, t = _s_and_t(case, h_at, b, index)
                if case.additive:
                    value = value - t if case.reverse else value + t
                else:
                    a = _log_scale(case.scale, s, case.clamp)
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
    """h[(b, c, ...)] on nested lists, and h.shape[1]."""

    def __init__(self, nested):
        self.nested = nested
        self.shape = (len(nested), len(nested[0]))

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
    flipped = type(case)(case.mask, case.scale, True, case.shift_first, case.reverse, case.clamp)
    y_spec, _ = spec_formula(flipped, x, h, case.mask.mask())
    assert not torch.allclose(y, y_spec)
