"""Which elements of a block the forward and backward kernels transform (see nf_kernels._layout)."""

import triton
import triton.language as tl

from ... import _layout

# The pattern codes of the kernel interface (nf_kernels/_layout.py), as Triton constants.
PATTERN_CHECKERBOARD: tl.constexpr = tl.constexpr(_layout.PATTERN_CHECKERBOARD)
PATTERN_MASK: tl.constexpr = tl.constexpr(_layout.PATTERN_MASK)


@triton.jit
def block_indices(N, nblk, BLOCK: tl.constexpr):
    """(sample b, flat indices n of this program's block, in-bounds mask); int64 so huge tensors index safely."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // nblk
    n = (pid % nblk) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    return b, n, n < N


@triton.jit
def transformed_elements(n, in_range, mask_ptr, W, PLANE, PATTERN: tl.constexpr, PARITY: tl.constexpr):
    """True where element n is transformed. The checkerboard parity comes from the indices: no mask is read."""
    if PATTERN == PATTERN_CHECKERBOARD:
        r = n % PLANE
        on = ((r // W + r % W) % 2) == PARITY
        sel = in_range & on
    elif PATTERN == PATTERN_MASK:
        m = tl.load(mask_ptr + n, mask=in_range, other=0)
        sel = in_range & (m != 0)
    else:
        sel = in_range
    return sel
