"""Which elements of a block the forward and backward kernels transform (see nf_kernels._layout)."""

import triton
import triton.language as tl

from ... import _layout

# The pattern codes of the kernel interface (nf_kernels/_layout.py), as Triton constants.
PATTERN_CHECKERBOARD: tl.constexpr = tl.constexpr(_layout.PATTERN_CHECKERBOARD)
PATTERN_MASK: tl.constexpr = tl.constexpr(_layout.PATTERN_MASK)
PATTERN_GATHER: tl.constexpr = tl.constexpr(_layout.PATTERN_GATHER)


@triton.jit
def program_tile(B, N, nblk, BLOCK: tl.constexpr, ROWS: tl.constexpr):
    """This program's tile: ROWS samples by BLOCK elements of each (programs are numbered block-fastest).

    Returns the sample indices `rows` ([ROWS, 1], int64: `rows * N` can pass 2^31), the in-sample indices `n`
    ([1, BLOCK], int32: a sample has fewer than 2^31 elements, the launcher checks), the in-bounds mask
    ([ROWS, BLOCK]) and the block number `blk` along the samples. Only one remainder and one division per
    program, both 32-bit.
    """
    pid = tl.program_id(0)
    blk = pid % nblk
    rows = (pid // nblk).to(tl.int64) * ROWS + tl.arange(0, ROWS)[:, None]
    n = blk * BLOCK + tl.arange(0, BLOCK)[None, :]
    return rows, n, (rows < B) & (n < N), blk


@triton.jit
def tile_touches_range(blk, lo, hi, BLOCK: tl.constexpr):
    """Whether block `blk` of the samples overlaps [lo, hi), the elements that may be transformed (one scalar test a
    program; a tile that does not only passes its input through)."""
    return (blk * BLOCK < hi) & (blk * BLOCK + BLOCK > lo)


@triton.jit
def transformed_elements(n, in_bounds, lo, hi, mask_ptr, W, PLANE, PATTERN: tl.constexpr, PARITY: tl.constexpr):
    """(in_range, sel, p, h_mask) over the tile: in bounds and in [lo, hi); True where the element is transformed;
    its position in h's parameter blocks (nf_kernels._layout); and the mask of every load and store of h.

    The checkerboard parity comes from the indices, 32-bit, once per column of the tile; a bool mask, or a compact
    h's table of positions, is read once per column and shared by the tile's samples. Loads of h are masked by
    ranges only (so they vectorize), but for a compact h, whose positions exist for transformed elements alone."""
    n_range = (n >= lo) & (n < hi)
    in_range = in_bounds & n_range
    p = n - lo
    h_mask = in_range
    if PATTERN == PATTERN_CHECKERBOARD:
        r = n % PLANE
        on = ((r // W + r % W) % 2) == PARITY
        sel = in_range & on
    elif PATTERN == PATTERN_MASK:
        m = tl.load(mask_ptr + n, mask=n_range, other=0)
        sel = in_range & (m != 0)
    elif PATTERN == PATTERN_GATHER:
        p = tl.load(mask_ptr + n, mask=n_range, other=-1)
        sel = in_range & (p >= 0)
        h_mask = sel
    else:
        sel = in_range
    return in_range, sel, p, h_mask


@triton.jit
def h_position(p, pair_inner, PAIRS: tl.constexpr):
    """base(p) of nf_kernels._layout: where a transformed element's parameters start in a sample of h, before the
    layout's s_offset and t_offset. (t, s_raw) channel pairs put the c-th channel of parameters at channel 2c."""
    if PAIRS:
        base = p + (p // pair_inner) * pair_inner
    else:
        base = p
    return base


@triton.jit
def spline_param_offsets(rows, p, params_stride, inner, P: tl.constexpr, ALIGN: tl.constexpr):
    """Where the spline parameters of a tile's elements start in `params` (nf_kernels._layout's spline layout), as
    [1, ROWS, BLOCK] offsets: parameter j of the element at position p (its channel c = p // inner among the
    channels params covers, offset r = p % inner) is at c * P * inner + j * inner + r of its sample (spline_lanes
    adds j * inner). One 32-bit division per element; `inner` is the elements per channel.

    The kernels do not let Triton specialize `inner` (an `inner` of 1, a vector flow's, would make each element's
    parameters look contiguous, and Triton would spread an element's lanes over threads). ALIGN, a power of two
    dividing `inner`, `params_stride` and BLOCK (the launcher's spline_alignment), says instead how many
    consecutive elements have consecutive parameters from a multiple of ALIGN: what makes 128-bit loads."""
    base = rows * params_stride + (p // inner) * (P * inner) + p % inner
    base = tl.max_contiguous(tl.multiple_of(base, [1, ALIGN]), [1, ALIGN])
    return base[None, :, :]


@triton.jit
def spline_lanes(first: tl.constexpr, inner, KP: tl.constexpr, ALIGN: tl.constexpr):
    """The offsets (j * inner, [KP, 1, 1]) of parameters j = first .. first + KP - 1 of an element, multiples of
    ALIGN (see spline_param_offsets)."""
    return tl.multiple_of((first + tl.arange(0, KP)[:, None, None]) * inner, [ALIGN, ALIGN, ALIGN])
