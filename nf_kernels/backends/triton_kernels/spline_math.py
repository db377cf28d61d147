"""Element-wise math of the rational-quadratic spline coupling (nflows' `unconstrained_rational_quadratic_spline`,
linear tails), shared by the Triton spline forward and backward kernels. Written once here; the kernels only
load, mask, reduce and store.

Each transformed element's 3K - 1 unconstrained parameters arrive as three [KP, ROWS, BLOCK] tiles (KP = K rounded
up to a power of two, lanes j >= K, or j >= K - 1 for the derivatives, are padding; the lanes first, so that
Triton's default layout of a tile, threads over its fastest dimension, keeps an element's lanes in one thread): everything an element needs
(softmax, knots, its bin) is recomputed from them in registers, forward and backward alike, so no N x K tensor is
ever written. The bin's six numbers (left knot, width, bottom knot, height, the two knot derivatives) are picked
out of the tiles by a sum over the lanes, in one thread's registers.

No libdevice (the interpreter cannot run it): exp, log, sqrt, sigmoid and coupling_math's log1p only.
"""

import triton
import triton.language as tl

from .coupling_math import log1p


@triton.jit
def softplus(u):
    """log(1 + exp(u)) = max(u, 0) + log1p(exp(-|u|)): no overflow for large u, and for very negative u the tiny
    result exp(u) keeps its relative accuracy (log1p)."""
    return tl.maximum(u, 0.0) + log1p(tl.exp(-tl.abs(u)))


@triton.jit
def lane_sum(values, lane, k):
    """values[..., k] for a per-element lane index k ([ROWS, BLOCK]): one lane of each element's tile ([KP, ROWS, BLOCK])."""
    return tl.sum(tl.where(lane == k[None, :, :], values, 0.0), axis=0)


@triton.jit
def bin_softmax(u, lane, K: tl.constexpr):
    """softmax(u) over each element's K lanes (padding lanes get 0)."""
    valid = lane < K
    u = tl.where(valid, u, float("-inf"))
    e = tl.exp(u - tl.max(u, axis=0)[None, :, :])
    e = tl.where(valid, e, 0.0)
    return e / tl.sum(e, axis=0)[None, :, :]


@triton.jit
def right_knots(softmax, lane, K: tl.constexpr, MIN_SIZE: tl.constexpr, BOUND: tl.constexpr):
    """The right knot of each bin, knots[1..K] in nflows' arithmetic: sizes MIN_SIZE + (1 - MIN_SIZE K) softmax,
    their cumulative sums mapped onto [-BOUND, BOUND], the last one BOUND exactly."""
    sizes = MIN_SIZE + (1.0 - MIN_SIZE * K) * softmax
    knots = (2.0 * BOUND) * tl.cumsum(tl.where(lane < K, sizes, 0.0), axis=0) - BOUND
    return tl.where(lane == K - 1, BOUND, knots)


@triton.jit
def bin_of(v, knots, lane, K: tl.constexpr):
    """The bin of v ([ROWS, BLOCK]): the number of interior knots at or below it, so in [0, K - 1] (nflows'
    searchsorted, with the last knot past every v inside the bound)."""
    below = (lane < K - 1) & (knots <= v[None, :, :])
    return tl.sum(below.to(tl.int32), axis=0)


@triton.jit
def bin_edges(knots, lane, k, BOUND: tl.constexpr):
    """(left knot, width) of bin k: the width is the difference of the two knots, as nflows computes it."""
    right = lane_sum(knots, lane, k)
    left = tl.where(k == 0, -BOUND, lane_sum(knots, lane, k - 1))
    return left, right - left


@triton.jit
def knot_derivatives(ud, lane, k, K: tl.constexpr, MIN_DERIVATIVE: tl.constexpr):
    """(d_k, d_{k+1}, u_k, u_{k+1}): the derivatives at bin k's knots, MIN_DERIVATIVE + softplus(u) inside, 1 at
    both ends (what nflows' padding constant gives after the same map), and the two unconstrained values they come
    from (lane j holds knot j + 1's; 0 at the ends). Only the bin's two lanes are mapped, and the backward needs
    only these two values, not the tile."""
    u0 = lane_sum(ud, lane, k - 1)
    u1 = lane_sum(ud, lane, k)
    d0 = tl.where(k == 0, 1.0, MIN_DERIVATIVE + softplus(u0))
    d1 = tl.where(k == K - 1, 1.0, MIN_DERIVATIVE + softplus(u1))
    return d0, d1, u0, u1


@triton.jit
def spline_bin(v, uw, uh, ud, lane, K: tl.constexpr, BOUND: tl.constexpr, MIN_W: tl.constexpr,
               MIN_H: tl.constexpr, MIN_D: tl.constexpr, INVERSE: tl.constexpr):  # fmt: skip
    """The bin that v (x, or y for the inverse) falls in and its numbers: (k, left knot, width, bottom knot,
    height, d_k, d_{k+1}, softmax of the widths, softmax of the heights, u_k, u_{k+1} of knot_derivatives)."""
    sw = bin_softmax(uw, lane, K)
    sh = bin_softmax(uh, lane, K)
    xknots = right_knots(sw, lane, K, MIN_W, BOUND)
    yknots = right_knots(sh, lane, K, MIN_H, BOUND)
    if INVERSE:
        k = bin_of(v, yknots, lane, K)
    else:
        k = bin_of(v, xknots, lane, K)
    xk, w = bin_edges(xknots, lane, k, BOUND)
    yk, h = bin_edges(yknots, lane, k, BOUND)
    d0, d1, u0, u1 = knot_derivatives(ud, lane, k, K, MIN_D)
    return k, xk, w, yk, h, d0, d1, sw, sh, u0, u1


@triton.jit
def spline_point(v, sel, uw, uh, ud, lane, K: tl.constexpr, BOUND: tl.constexpr, MIN_W: tl.constexpr,
                 MIN_H: tl.constexpr, MIN_D: tl.constexpr, INVERSE: tl.constexpr):  # fmt: skip
    """Where the input v (x, or y for the inverse; [ROWS, BLOCK]) lies on its element's spline: (inside, theta,
    and spline_bin's numbers). `inside`: transformed (sel) and in [-BOUND, BOUND], the elements the spline moves;
    the others pass through, and their numbers, computed at v clamped to the bound, are finite but unused."""
    inside = sel & (v >= -BOUND) & (v <= BOUND)
    v = tl.minimum(tl.maximum(v, -BOUND), BOUND)
    k, xk, w, yk, h, d0, d1, sw, sh, u0, u1 = spline_bin(v, uw, uh, ud, lane, K, BOUND, MIN_W, MIN_H, MIN_D, INVERSE)
    s = h / w
    if INVERSE:
        theta = inverse_theta(v, yk, h, s, d0, d1)
    else:
        theta = forward_theta(v, xk, w)
    return inside, theta, k, xk, w, yk, h, s, d0, d1, sw, sh, u0, u1


@triton.jit
def inverse_theta(y, yk, h, s, d0, d1):
    """theta in [0, 1] of the bin where the spline reaches y: the root of a theta^2 + b theta + c = 0 (c <= 0)
    in a form that does not cancel: 2c / (-b - sqrt(b^2 - 4ac)) where b >= 0 (nflows' form, always), and
    (-b + sqrt(b^2 - 4ac)) / 2a where b < 0 (steep bins next to flat ones; a > 0 there), as the reference."""
    dy = y - yk
    slope = d0 + d1 - 2.0 * s
    a = h * (s - d0) + dy * slope
    b = h * d0 - dy * slope
    c = -s * dy
    root = tl.sqrt(tl.maximum(b * b - 4.0 * a * c, 0.0))
    positive = b >= 0
    return unit(tl.where(positive, 2.0 * c, root - b) / tl.where(positive, -b - root, 2.0 * a))


@triton.jit
def forward_theta(x, xk, w):
    """theta in [0, 1] of x in the bin that starts at xk and is w wide."""
    return unit((x - xk) / w)


@triton.jit
def unit(theta):
    """theta clamped to [0, 1], where it lies in exact arithmetic: rounding (a bin of the minimal size, an input on
    a knot) can put it just outside, where the log-det's q and denominator can turn negative (NaN logs)."""
    return tl.minimum(tl.maximum(theta, 0.0), 1.0)


@triton.jit
def rq_value(theta, yk, h, s, d0, d1):
    """(y, log dy/dx) of the rational-quadratic segment at theta."""
    omt = 1.0 - theta
    t1 = theta * omt
    den = s + (d0 + d1 - 2.0 * s) * t1
    y = yk + h * (s * theta * theta + d0 * t1) / den
    q = d1 * theta * theta + 2.0 * s * t1 + d0 * omt * omt
    return y, tl.log(s * s * q) - 2.0 * tl.log(den)


@triton.jit
def rq_grads(theta, w, h, s, d0, d1, g, g_logdet, INVERSE: tl.constexpr):
    """Gradients of one element, from the incoming gradient g of its output and g_logdet of its log-det term:
    (grad of the input, and of the bin's left knot, width, bottom knot, height, d_k, d_{k+1}).

    Forward: the input is x, the output y = f(x) and the term L(x). Inverse: the input is y, the output
    x = f^-1(y) and the term -L(x); by the implicit function theorem its gradient with respect to a bin number p
    is cf f_p + cl L_p with cf = -(g - g_logdet L_x) / f_x and cl = -g_logdet, the forward's form with cf = g and
    cl = g_logdet: both directions share the partial derivatives below (at fixed x, through theta and s)."""
    omt = 1.0 - theta
    t1 = theta * omt
    slope = d0 + d1 - 2.0 * s
    den = s + slope * t1
    inv_den = 1.0 / den
    num = s * theta * theta + d0 * t1  # (y - yk) / h = num / den
    q = d1 * theta * theta + 2.0 * s * t1 + d0 * omt * omt
    inv_q = 1.0 / q
    inv_w = 1.0 / w
    fx = s * s * q * inv_den * inv_den  # dy/dx
    # d/dtheta of L = log(s^2 q) - 2 log(den)
    l_theta = (2.0 * d1 * theta + 2.0 * s * (1.0 - 2.0 * theta) - 2.0 * d0 * omt) * inv_q - 2.0 * slope * (
        1.0 - 2.0 * theta
    ) * inv_den
    if INVERSE:
        cf = -(g - g_logdet * l_theta * inv_w) / fx
        cl = -g_logdet
        grad_in = -cf
    else:
        cf = g
        cl = g_logdet
        grad_in = cf * fx + cl * l_theta * inv_w
    inv_den2 = inv_den * inv_den
    ch = cf * h
    e_theta = cf * w * fx + cl * l_theta  # h d(num/den)/dtheta = w fx
    e_s = ch * (theta * theta * den - num * (1.0 - 2.0 * t1)) * inv_den2 + cl * (
        2.0 / s + 2.0 * t1 * inv_q - 2.0 * (1.0 - 2.0 * t1) * inv_den
    )
    e_d0 = ch * t1 * (den - num) * inv_den2 + cl * (omt * omt * inv_q - 2.0 * t1 * inv_den)
    e_d1 = -ch * num * t1 * inv_den2 + cl * (theta * theta * inv_q - 2.0 * t1 * inv_den)
    g_left = -e_theta * inv_w
    g_width = -(e_theta * theta + e_s * s) * inv_w
    g_height = cf * num * inv_den + e_s * inv_w
    return grad_in, g_left, g_width, cf, g_height, e_d0, e_d1


@triton.jit
def size_grads(softmax, lane, k, g_left, g_size, K: tl.constexpr, MIN_SIZE: tl.constexpr, BOUND: tl.constexpr):
    """Gradients of the unconstrained sizes (widths or heights) from those of bin k's left knot and size.

    As nflows computes them: the left knot is knot k = -B + 2B sum_{i<k} size_i and the size knot k + 1 minus knot
    k, where knot K is B exactly. So size_i gets 2B g_left for i < k and 2B g_size at k, and in the last bin, whose
    right knot is the constant B, 2B (g_left - g_size) for i < k and nothing at k. (The two forms differ by a
    constant over i, which the softmax's gradient removes, but at the last knot the first would take the
    difference of two large numbers: g_left and g_size go with 1 / width and nearly cancel there.) Then back
    through size = MIN_SIZE + (1 - MIN_SIZE K) softmax(u)."""
    last = k == K - 1
    below = tl.where(last, g_left - g_size, g_left)
    at_k = tl.where(last, 0.0, g_size)
    g = tl.where(lane < k[None, :, :], below[None, :, :], 0.0) + tl.where(lane == k[None, :, :], at_k[None, :, :], 0.0)
    g = g * ((2.0 * BOUND) * (1.0 - MIN_SIZE * K))
    return softmax * (g - tl.sum(softmax * g, axis=0)[None, :, :])


@triton.jit
def derivative_grads(lane, k, g_d0, g_d1, u0, u1, K: tl.constexpr):
    """Gradients of the unconstrained interior derivatives: lane j is the derivative at knot j + 1, so d_k is lane
    k - 1 and d_{k+1} lane k (the end knots' derivatives are constants), u0 and u1 their unconstrained values;
    softplus' = sigmoid."""
    g = tl.where(lane == k[None, :, :] - 1, (g_d0 * tl.sigmoid(u0))[None, :, :], 0.0) + tl.where(
        lane == k[None, :, :], (g_d1 * tl.sigmoid(u1))[None, :, :], 0.0
    )
    return tl.where(lane < K - 1, g, 0.0)
