"""Element-wise math shared by the forward and backward Triton kernels: scale maps, their derivatives, the
coupling step and its local gradient. Written once here; the kernels only load, mask, reduce and store.

No libdevice: the Triton interpreter (TRITON_INTERPRET=1, used by the CPU tests) cannot run it, so tanh, atan
and log-sigmoid are built from exp, log, sqrt and polynomials, accurate to a few ulps in float32 and float64 over
the whole range, including near 0 (zero-initialized conditioners start there) and at the overflow edge.
"""

import triton
import triton.language as tl

from ..._arguments import FREIA_ATAN_FACTOR, NFLOWS_SCALE_FLOOR
from ..._layout import SCALE_CODES

# The scale codes of the kernel interface (nf_kernels/_layout.py), as Triton constants.
ADDITIVE: tl.constexpr = tl.constexpr(SCALE_CODES["none"])
EXP: tl.constexpr = tl.constexpr(SCALE_CODES["exp"])
TANH: tl.constexpr = tl.constexpr(SCALE_CODES["tanh"])
ATAN: tl.constexpr = tl.constexpr(SCALE_CODES["atan"])
SIGMOID: tl.constexpr = tl.constexpr(SCALE_CODES["sigmoid"])
RSIGMOID: tl.constexpr = tl.constexpr(SCALE_CODES["rsigmoid"])
NFLOWS_SIGMOID: tl.constexpr = tl.constexpr(SCALE_CODES["nflows_sigmoid"])
SOFTCLAMP: tl.constexpr = tl.constexpr(SCALE_CODES["softclamp"])
CLIP: tl.constexpr = tl.constexpr(SCALE_CODES["clip"])
FREIA_ATAN: tl.constexpr = tl.constexpr(SCALE_CODES["freia_atan"])
FREIA_TANH: tl.constexpr = tl.constexpr(SCALE_CODES["freia_tanh"])
FREIA_SIGMOID: tl.constexpr = tl.constexpr(SCALE_CODES["freia_sigmoid"])
# The maps' fixed constants (nf_kernels/_arguments.py says where each comes from).
SCALE_FLOOR: tl.constexpr = tl.constexpr(NFLOWS_SCALE_FLOOR)
ATAN_FACTOR: tl.constexpr = tl.constexpr(FREIA_ATAN_FACTOR)


@triton.jit
def tanh(u):
    w = tl.abs(u)
    # Away from 0: (1 - e) / (1 + e) with e = exp(-2|u|) <= exp(-1.1), so 1 - e does not cancel (and exp of a
    # non-positive argument never overflows).
    e = tl.exp(-2.0 * w)
    far = (1.0 - e) / (1.0 + e)
    # Near 0, where 1 - e would cancel: tanh(w / 4) by its odd Taylor series (w / 4 < 0.1375: 9 terms are exact to
    # float64 rounding), then twice tanh(2v) = 2 tanh(v) / (1 + tanh(v)^2), which loses nothing.
    v = 0.25 * tl.minimum(w, 0.55)
    v2 = v * v
    p = 6404582.0 / 10854718875.0
    p = p * v2 - 929569.0 / 638512875.0
    p = p * v2 + 21844.0 / 6081075.0
    p = p * v2 - 1382.0 / 155925.0
    p = p * v2 + 62.0 / 2835.0
    p = p * v2 - 17.0 / 315.0
    p = p * v2 + 2.0 / 15.0
    p = p * v2 - 1.0 / 3.0
    r = v + v * v2 * p
    r = 2.0 * r / (1.0 + r * r)
    r = 2.0 * r / (1.0 + r * r)
    r = tl.where(w < 0.55, r, far)
    return tl.where(u < 0, -r, r)


@triton.jit
def tanh_derivative(u):
    """1 - tanh(u)^2, as 4e / (1 + e)^2 with e = exp(-2|u|): no cancellation where tanh(u) is near +-1."""
    e = tl.exp(-2.0 * tl.abs(u))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))


@triton.jit
def atan(u):
    w = tl.abs(u)
    big = w > 1.0
    z = tl.where(big, 1.0 / tl.where(big, w, 1.0), w)  # now in [0, 1]; atan(w) = pi/2 - atan(1/w)
    # Two half-angle steps, atan(z) = 2 atan(z / (1 + sqrt(1 + z^2))), bring z below tan(pi/16) ~ 0.199,
    # where 12 terms of the Taylor series are exact to float64 rounding (0.199^25 / 25 < 1e-18).
    z = z / (1.0 + tl.sqrt(1.0 + z * z))
    z = z / (1.0 + tl.sqrt(1.0 + z * z))
    z2 = z * z
    p = -1.0 / 23.0
    p = p * z2 + 1.0 / 21.0
    p = p * z2 - 1.0 / 19.0
    p = p * z2 + 1.0 / 17.0
    p = p * z2 - 1.0 / 15.0
    p = p * z2 + 1.0 / 13.0
    p = p * z2 - 1.0 / 11.0
    p = p * z2 + 1.0 / 9.0
    p = p * z2 - 1.0 / 7.0
    p = p * z2 + 1.0 / 5.0
    p = p * z2 - 1.0 / 3.0
    p = p * z2 + 1.0
    r = 4.0 * z * p
    r = tl.where(big, 1.5707963267948966 - r, r)
    return tl.where(u < 0, -r, r)


@triton.jit
def log1p(u):
    """log(1 + u) for u > -1. Where |u| < 0.1, and 1 + u would round u away: 2 atanh(z) with z = u / (2 + u),
    |z| < 0.053, by 7 terms of its series (exact to float64 rounding); elsewhere log(1 + u) itself loses nothing."""
    z = u / (2.0 + u)
    z2 = z * z
    p = 1.0 / 13.0
    p = p * z2 + 1.0 / 11.0
    p = p * z2 + 1.0 / 9.0
    p = p * z2 + 1.0 / 7.0
    p = p * z2 + 1.0 / 5.0
    p = p * z2 + 1.0 / 3.0
    p = p * z2 + 1.0
    return tl.where(tl.abs(u) < 0.1, 2.0 * z * p, tl.log(1.0 + u))


@triton.jit
def log_sigmoid(v):
    # log(sigmoid(v)) = -softplus(-v) = min(v, 0) - log1p(exp(-|v|)): no overflow, no log(0), and for large v the
    # tiny result -exp(-v) keeps its relative accuracy.
    return tl.minimum(v, 0.0) - log1p(tl.exp(-tl.abs(v)))


@triton.jit
def log_floored_sigmoid(v):
    """log(sigmoid(v) + SCALE_FLOOR) (nflows). For v >= 0 as log1p(floor - sigmoid(-v)): the result is near 1e-3
    for large v, which log(1.001...) would get to only ~6e-5 of itself in float32. For v < 0 no term cancels."""
    e = tl.exp(-tl.abs(v))
    small = e / (1.0 + e)  # sigmoid(-|v|): sigmoid(-v) for v >= 0, sigmoid(v) for v < 0
    return tl.where(v >= 0, log1p(SCALE_FLOOR - small), tl.log(small + SCALE_FLOOR))


@triton.jit
def log_scale(s, SCALE: tl.constexpr, CLAMP: tl.constexpr, INV_CLAMP: tl.constexpr, CLAMP_LOW: tl.constexpr):
    """a(s_raw) of the SPEC's scale table. INV_CLAMP is 1 / CLAMP, computed once by the launcher: a
    multiplication per element instead of a division. CLAMP_LOW is the lower bound of "clip" (CLAMP the upper)."""
    if SCALE == TANH:
        a = CLAMP * tanh(s * INV_CLAMP)
    elif SCALE == ATAN:
        a = CLAMP * 0.6366197723675814 * atan(s * INV_CLAMP)
    elif SCALE == SIGMOID:
        a = log_sigmoid(s + 2.0)
    elif SCALE == RSIGMOID:
        a = -log_sigmoid(s + 2.0)
    elif SCALE == NFLOWS_SIGMOID:
        a = log_floored_sigmoid(s + 2.0)
    elif SCALE == SOFTCLAMP:
        a = s / (1.0 + tl.abs(s) * INV_CLAMP)
    elif SCALE == CLIP:
        # Comparisons, not minimum/maximum: a NaN fails both and passes through (SPEC: NaN propagates).
        a = tl.where(s < CLAMP_LOW, CLAMP_LOW, tl.where(s > CLAMP, CLAMP, s))
    elif SCALE == FREIA_ATAN:
        a = (CLAMP * ATAN_FACTOR) * atan(s)
    elif SCALE == FREIA_TANH:
        a = CLAMP * tanh(s)
    elif SCALE == FREIA_SIGMOID:
        a = CLAMP * tanh(0.5 * s)  # FrEIA's 2 (sigmoid(s) - 1/2), without its cancellation near 0
    else:
        a = s
    return a


@triton.jit
def log_scale_grad(s, SCALE: tl.constexpr, CLAMP: tl.constexpr, INV_CLAMP: tl.constexpr):
    """a'(s_raw); 1 for "clip", pyro's convention (the gradient passes through the clamp)."""
    if SCALE == TANH:
        d = tanh_derivative(s * INV_CLAMP)
    elif SCALE == ATAN:
        q = s * INV_CLAMP
        d = 0.6366197723675814 / (1.0 + q * q)
    elif SCALE == SIGMOID:
        d = tl.sigmoid(-(s + 2.0))  # d/dv log(sigmoid(v)) = 1 - sigmoid(v)
    elif SCALE == RSIGMOID:
        d = -tl.sigmoid(-(s + 2.0))
    elif SCALE == NFLOWS_SIGMOID:
        # sigmoid(v) sigmoid(-v) / (sigmoid(v) + floor), both sigmoids from exp(-|v|), which never overflows.
        v = s + 2.0
        e = tl.exp(-tl.abs(v))
        big, small = 1.0 / (1.0 + e), e / (1.0 + e)  # sigmoid(|v|), sigmoid(-|v|)
        d = big * small / (tl.where(v >= 0, big, small) + SCALE_FLOOR)
    elif SCALE == SOFTCLAMP:
        q = 1.0 + tl.abs(s) * INV_CLAMP
        d = 1.0 / (q * q)
    elif SCALE == FREIA_ATAN:
        d = (CLAMP * ATAN_FACTOR) / (1.0 + s * s)
    elif SCALE == FREIA_TANH:
        d = CLAMP * tanh_derivative(s)
    elif SCALE == FREIA_SIGMOID:
        d = (0.5 * CLAMP) * tanh_derivative(0.5 * s)
    else:  # "exp" and "clip"
        d = tl.zeros_like(s) + 1.0
    return d


@triton.jit
def coupling_step(x, a, t, SCALE: tl.constexpr, SHIFT_FIRST: tl.constexpr, REVERSE: tl.constexpr):
    """The transformed element's output, given its input x, log-scale a and shift t (SPEC semantics)."""
    if SCALE == ADDITIVE:
        if REVERSE:
            out = x - t
        else:
            out = x + t
    elif REVERSE:
        if SHIFT_FIRST:
            out = x * tl.exp(-a) - t
        else:
            out = (x - t) * tl.exp(-a)
    else:
        if SHIFT_FIRST:
            out = (x + t) * tl.exp(a)
        else:
            out = x * tl.exp(a) + t
    return out


@triton.jit
def coupling_step_grad(g, g_logdet, x, a, t, SCALE: tl.constexpr, SHIFT_FIRST: tl.constexpr, REVERSE: tl.constexpr):
    """Local gradient of one transformed element: (grad x, grad t, grad a) from grad out `g` and the sample's
    grad logdet. The output is `u * exp(+-a)` (+-t) where u is x, x + t or x - t, depending on the order."""
    if SCALE == ADDITIVE:
        gx = g
        if REVERSE:
            gt = -g
        else:
            gt = g
        ga = tl.zeros_like(g)
    else:
        if REVERSE:
            e = tl.exp(-a)
            if SHIFT_FIRST:
                u = x
                gt = -g
            else:
                u = x - t
                gt = -g * e
            ga = -(g * u * e) - g_logdet
        else:
            e = tl.exp(a)
            if SHIFT_FIRST:
                u = x + t
                gt = g * e
            else:
                u = x
                gt = g
            ga = g * u * e + g_logdet
        gx = g * e
    return gx, gt, ga
