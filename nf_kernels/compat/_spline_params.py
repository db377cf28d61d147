"""How a peer library's per-feature spline parameters become the spline op's `params` (SPEC section 1b).

The peers' conditioners emit, for each transformed feature (or channel) in turn, its 3K - 1 unconstrained
parameters (K widths, K heights, K - 1 interior derivatives): the op's own order, so for mask="half" (whose params
cover the transformed channels only) the conditioner's output is the op's params as it is. Every other mask takes
params over all C channels (the op has no compact form for them): the compact output is then written into a
zero tensor at the transformed channels, one copy (the op ignores the values at kept channels).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor


def per_feature(params: Tensor, per_element: int) -> Tensor:
    """The conditioner's output [B, C_t * P, *rest] as [B, C_t, P, *rest] (the reshape the peers apply)."""
    return params.reshape(params.shape[0], -1, per_element, *params.shape[2:])


def op_params(per_feature_params: Tensor, transformed: Optional[Tensor], channels: int) -> Tensor:
    """The op's params from [B, C_t, P, *rest]: flattened as they are for mask="half" (`transformed` None), else
    spread over all `channels` at the indices `transformed` (a long tensor of the C_t transformed channels)."""
    p = per_feature_params
    if transformed is not None:
        p = p.new_zeros(p.shape[0], channels, *p.shape[2:]).index_copy(1, transformed, p)
    return p.flatten(1, 2)
