"""How the Triton spline kernels read each element's 3K - 1 parameters and write their gradients, in two ways.

By lanes (every layout): an element's parameter j is at j * inner from its first one, so a thread loads the lanes
of its own elements; consecutive elements of a channel (inner > 1, images) sit side by side, and ALIGN of them
make one 128-bit access per parameter.

By rows (vector flows, inner == 1, a program's tile holding whole samples): an element's P parameters are
side by side (a 92-byte stride for 8 bins), so no lane of one element is 16-byte aligned, but a sample's
parameters are one contiguous row of params_stride values. Each program then reads its samples' rows whole with
128-bit accesses, as a [ROWS, SPAN] block (SPAN: params_stride rounded up to a power of two, the tail masked),
and picks every element's lanes out of it with tl.gather (through shared memory); the backward gathers its
gradient lanes back into such a block and writes it with 128-bit stores.
"""

import triton
import triton.language as tl

from .indexing import spline_lanes, spline_param_offsets


@triton.jit
def load_params_by_lanes(params_ptr, rows, p, p_mask, params_stride, inner, K: tl.constexpr, KP: tl.constexpr,
                         ALIGN: tl.constexpr, CT: tl.constexpr):  # fmt: skip
    """The tile's (widths, heights, interior derivatives), unconstrained, as [KP, ROWS, BLOCK] tiles in CT (spline_math.py). Masked
    by the elements that have parameters (ranges only) and the lanes that exist."""
    at = params_ptr + spline_param_offsets(rows, p, params_stride, inner, 3 * K - 1, ALIGN)
    lane = tl.arange(0, KP)[:, None, None]
    m = p_mask[None, :, :]
    uw = tl.load(at + spline_lanes(0, inner, KP, ALIGN), mask=m & (lane < K), other=0.0).to(CT)
    uh = tl.load(at + spline_lanes(K, inner, KP, ALIGN), mask=m & (lane < K), other=0.0).to(CT)
    ud = tl.load(at + spline_lanes(2 * K, inner, KP, ALIGN), mask=m & (lane < K - 1), other=0.0).to(CT)
    return uw, uh, ud


@triton.jit
def store_grads_by_lanes(grad_params_ptr, rows, p, p_mask, params_stride, inner, g_uw, g_uh, g_ud, K: tl.constexpr,
                         KP: tl.constexpr, ALIGN: tl.constexpr):  # fmt: skip
    """Write the three [KP, ROWS, BLOCK] gradient tiles (already in grad_params' dtype) where load_params_by_lanes
    read their parameters."""
    at = grad_params_ptr + spline_param_offsets(rows, p, params_stride, inner, 3 * K - 1, ALIGN)
    lane = tl.arange(0, KP)[:, None, None]
    m = p_mask[None, :, :]
    tl.store(at + spline_lanes(0, inner, KP, ALIGN), g_uw, mask=m & (lane < K))
    tl.store(at + spline_lanes(K, inner, KP, ALIGN), g_uh, mask=m & (lane < K))
    tl.store(at + spline_lanes(2 * K, inner, KP, ALIGN), g_ud, mask=m & (lane < K - 1))


@triton.jit
def row_block(rows, B, params_stride, SPAN: tl.constexpr, ROWS: tl.constexpr):
    """The tile's samples' parameter rows, each padded to SPAN, as one flat block of ROWS * SPAN positions: their
    (row, position in the row, offset in params, mask). One flat block, not [ROWS, SPAN]: tl.gather of a 2-D block
    would have each row in one warp and pick lanes with shuffles (registers spill); a flat one goes through shared
    memory. params_stride is a runtime argument Triton specializes by 16: a multiple of 4, so every row starts
    16-byte aligned."""
    q = tl.arange(0, ROWS * SPAN)
    r = q // SPAN
    c = q % SPAN
    row = tl.min(rows, axis=0) + r  # rows: [ROWS, 1], consecutive
    return r, c, row * params_stride + c, (row < B) & (c < params_stride)


@triton.jit
def lane_positions(p, p_mask, first: tl.constexpr, count: tl.constexpr, P: tl.constexpr, KP: tl.constexpr,
                   SPAN: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """Where parameters first .. first + KP - 1 of each tile element lie in row_block's flat block, as a flat
    [KP * ROWS * BLOCK] index (lane-major, see gather_tile); 0 (a valid position, value unused) for lanes past
    `count` and for the elements without parameters."""
    lane = tl.arange(0, KP)[:, None, None]
    r = tl.arange(0, ROWS)[None, :, None]
    at = tl.where(p_mask[None, :, :] & (lane < count), r * SPAN + p[None, :, :] * P + first + lane, 0)
    return tl.reshape(at, [KP * ROWS * BLOCK])


@triton.jit
def gather_tile(block, at, KP: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """block[at] as a [KP, ROWS, BLOCK] tile."""
    return tl.reshape(tl.gather(block, at, 0), [KP, ROWS, BLOCK])


@triton.jit
def load_params_by_rows(params_ptr, rows, p, p_mask, B, params_stride, K: tl.constexpr, KP: tl.constexpr,
                        SPAN: tl.constexpr, CT: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """load_params_by_lanes' tiles, read as whole rows (see the module's docstring). p: [1, BLOCK] or [ROWS,
    BLOCK], the elements' positions in their sample's parameters."""
    _, _, offsets, valid = row_block(rows, B, params_stride, SPAN, ROWS)
    block = tl.load(params_ptr + offsets, mask=valid, other=0.0).to(CT)
    p = tl.broadcast_to(p, [ROWS, BLOCK])
    P: tl.constexpr = 3 * K - 1
    uw = gather_tile(block, lane_positions(p, p_mask, 0, K, P, KP, SPAN, ROWS, BLOCK), KP, ROWS, BLOCK)
    uh = gather_tile(block, lane_positions(p, p_mask, K, K, P, KP, SPAN, ROWS, BLOCK), KP, ROWS, BLOCK)
    ud = gather_tile(block, lane_positions(p, p_mask, 2 * K, K - 1, P, KP, SPAN, ROWS, BLOCK), KP, ROWS, BLOCK)
    return uw, uh, ud


@triton.jit
def store_grads_by_rows(grad_params_ptr, rows, lo, B, params_stride, g_uw, g_uh, g_ud, K: tl.constexpr,
                        KP: tl.constexpr, SPAN: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """Write the three [KP, ROWS, BLOCK] gradient tiles as whole rows: position c of a row is parameter j = c % P of
    the element at p = c // P, tile column lo + p (the tile holds whole samples, so column n is element n)."""
    P: tl.constexpr = 3 * K - 1
    r, c, offsets, valid = row_block(rows, B, params_stride, SPAN, ROWS)
    j = c % P
    # One gather from the three tiles side by side (three would hold three gathered blocks in registers at once):
    # join(join(w, h), join(d, 0))[..., lane, which, set] is w, h, d for (which, set) = (0, 0), (1, 0), (0, 1).
    tiles = tl.join(tl.join(g_uw, g_uh), tl.join(g_ud, tl.zeros_like(g_ud)))
    kind = (j >= K).to(tl.int32) + (j >= 2 * K).to(tl.int32)  # 0, 1, 2: width, height, derivative
    lane = j - kind * K
    at = (((lane * ROWS + r) * BLOCK + lo + c // P) * 2 + (kind == 1).to(tl.int32)) * 2 + (kind == 2).to(tl.int32)
    g = tl.gather(tl.reshape(tiles, [KP * ROWS * BLOCK * 4]), tl.where(c < params_stride, at, 0), 0)
    tl.store(grad_params_ptr + offsets, g, mask=valid)
