"""Drop-in classes for normflows 1.7: its affine and additive couplings through the fused ops.

normflows' `forward` is its sampling direction (z to x) and `inverse` its density direction (`log_prob` runs the
flows' inverses); each returns log|det| of the map it computes, the op's convention for reverse=False and True.
Its conditioners (`param_map`) emit shift and scale interleaved along dim 1 (`param[:, 0::2]`, `param[:, 1::2]`):
the op's h_layout="shift_scale_pairs", read in place. docs/compat.md has the table of what is accelerated.

    >>> import torch, normflows as nf
    >>> from nf_kernels.compat import normflows as fused
    >>> block = fused.AffineCouplingBlock(nf.nets.MLP([2, 16, 4], init_zeros=True))   # was nf.flows.AffineCouplingBlock
    >>> z, log_det = block(torch.randn(3, 4))
    >>> log_det.tolist()
    [0.0, 0.0, 0.0]
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import functional
from ._adopt import Accelerated, Unsupported
from ._library import require
from ._splits import range_mask

nf = require("normflows")

# normflows' scale maps (AffineCoupling's `scale_map`) as the op's: "sigmoid" divides by sigmoid(s + 2), so its
# log-scale is -log sigmoid(s + 2); "sigmoid_inv" multiplies by it.
SCALE_MAPS = {"exp": "exp", "sigmoid": "rsigmoid", "sigmoid_inv": "sigmoid"}
SPLIT_MODES = ("channel", "channel_inv", "checkerboard", "checkerboard_inv")


def _op_scale(coupling) -> Optional[str]:
    """The op's scale map of a normflows AffineCoupling, None for its additive form (scale=False)."""
    if not coupling.scale:
        return None
    if coupling.scale_map not in SCALE_MAPS:
        raise Unsupported(f"normflows scale_map={coupling.scale_map!r} is not one of {sorted(SCALE_MAPS)}")
    return SCALE_MAPS[coupling.scale_map]


def _couple(layer, x: Tensor, param: Tensor, mask, flip: bool, reverse: bool, scale: Optional[str]):
    """The fused coupling of x with normflows' interleaved `param`; the log-det in x's dtype, as normflows sums it."""
    backend = layer.nf_kernels_backend
    if scale is None:
        y, log_det = functional.additive_coupling(x, param, mask=mask, flip=flip, reverse=reverse, backend=backend)
    else:
        y, log_det = functional.affine_coupling(x, param, mask=mask, flip=flip, scale=scale, reverse=reverse,
                                                h_layout="shift_scale_pairs", backend=backend)  # fmt: skip
    return y, log_det.to(x.dtype)


class AffineCoupling(Accelerated, nf.flows.AffineCoupling):
    """normflows' AffineCoupling (z = [z1, z2], z2 transformed given z1) through the fused op."""

    @classmethod
    def check(cls, layer) -> None:
        _op_scale(layer)

    def _transform(self, z, reverse: bool):
        z1, z2 = z
        param = self.param_map(z1)
        nothing_kept = torch.zeros(z2.shape[1:], dtype=torch.bool, device=z2.device)  # z2 is all transformed
        z2, log_det = _couple(self, z2, param, nothing_kept, False, reverse, _op_scale(self))
        return [z1, z2], log_det

    def forward(self, z):
        return self._transform(z, reverse=False)

    def inverse(self, z):
        return self._transform(z, reverse=True)


def _checkerboard_kept(shape, inverted: bool, device) -> Tensor:
    """normflows' Split(mode="checkerboard"): z1 (kept) where the sum of an element's indices over all sample dims,
    channels included, is odd; "checkerboard_inv": where it is even."""
    parity = torch.zeros((), dtype=torch.long, device=device)
    for dim, size in enumerate(shape):
        parity = parity + torch.arange(size, device=device).view(-1, *([1] * (len(shape) - dim - 1)))
    return parity % 2 == (0 if inverted else 1)


class AffineCouplingBlock(Accelerated, nf.flows.AffineCouplingBlock):
    """normflows' AffineCouplingBlock (Split, AffineCoupling, Merge) as one fused op: no split or merge copies."""

    @classmethod
    def check(cls, layer) -> None:
        flows = list(layer.flows)
        split, merge = (flows[0], flows[-1]) if len(flows) == 3 else (None, None)
        if not (type(split) is nf.flows.Split and type(merge) is nf.flows.Merge
                and isinstance(flows[1], nf.flows.AffineCoupling) and split.mode == merge.mode):  # fmt: skip
            raise Unsupported("an AffineCouplingBlock whose flows are not [Split, AffineCoupling, Merge] of one mode")
        if split.mode not in SPLIT_MODES:
            raise Unsupported(f"split_mode={split.mode!r} is not one of {SPLIT_MODES}")
        _op_scale(flows[1])

    def _transform(self, z: Tensor, reverse: bool):
        coupling, mode = self.flows[1], self.flows[0].mode
        if mode.startswith("channel"):
            # Split uses chunk(2, dim=1): the first chunk has the odd channel. "channel" keeps it, "channel_inv" the rest.
            channels = z.shape[1]
            first = (channels + 1) // 2
            start, stop = (0, first) if mode == "channel" else (first, channels)
            mask, flip = range_mask(z, start, stop)
            z1 = z[:, start:stop]
        else:
            if z.shape[-1] % 2:
                raise ValueError(f"normflows' checkerboard split needs an even last dimension, got shape {tuple(z.shape)}")
            mask, flip = _checkerboard_kept(z.shape[1:], mode.endswith("_inv"), z.device), False
            # z1 as Split lays it out: the kept elements in flat order, each row of the last dim halved.
            z1 = z.reshape(z.shape[0], -1)[:, mask.reshape(-1)].view(*z.shape[:-1], -1)
        return _couple(self, z, coupling.param_map(z1), mask, flip, reverse, _op_scale(coupling))

    def forward(self, z):
        return self._transform(z, reverse=False)

    def inverse(self, z):
        return self._transform(z, reverse=True)


class MaskedAffineFlow(Accelerated, nf.flows.MaskedAffineFlow):
    """normflows' MaskedAffineFlow (f(z) = b z + (1 - b)(z exp(s(b z)) + t(b z))) through the fused op, with the
    0/1 mask `b` as the op's bool mask and h = [s, t] (the two networks' outputs, concatenated: one copy)."""

    @classmethod
    def check(cls, layer) -> None:
        b = layer.b
        if not bool(((b == 0) | (b == 1)).all()):
            raise Unsupported("MaskedAffineFlow with a mask b that is not all 0 and 1 (the fused op keeps or "
                              "transforms each element)")  # fmt: skip

    def _transform(self, z: Tensor, reverse: bool):
        z_masked = self.b * z  # what normflows' networks read
        kept = self.b[0] != 0
        shift = self.t(z_masked)
        if self.s is torch.zeros_like:  # no scale network: a shift alone
            return _couple(self, z, shift, kept, False, reverse, None)
        h = torch.cat([self.s(z_masked), shift], dim=1)
        backend = self.nf_kernels_backend
        y, log_det = functional.affine_coupling(z, h, mask=kept, scale="exp", reverse=reverse, backend=backend)
        return y, log_det.to(z.dtype)

    def forward(self, z):
        return self._transform(z, reverse=False)

    def inverse(self, z):
        return self._transform(z, reverse=True)


# The library classes this module replaces, with their drop-in classes (nf_kernels.compat.accelerate reads it), and
# the base class of the library's flow layers (what accelerate reports when it leaves one alone).
DROP_INS = {cls.replaces: cls for cls in (AffineCoupling, AffineCouplingBlock, MaskedAffineFlow)}
FLOW_BASE = nf.flows.Flow
# Coupling layers with no drop-in, and why (accelerate reports it). Both spline couplings wrap normflows' copy of
# nflows' PiecewiseRationalQuadraticCoupling, whose spline the op computes, but always build it with
# apply_unconditional_transform=True: their identity features go through a spline of their own parameters too (the
# NSF paper's equations 4 to 6), which a coupling op, passing the kept features through unchanged, does not compute.
_UNCONDITIONAL = ("its identity features through an unconditional spline too (apply_unconditional_transform=True, "
                  "fixed by normflows), which the fused coupling passes through unchanged")  # fmt: skip
NOT_FUSED = {
    nf.flows.CoupledRationalQuadraticSpline: f"a spline coupling that sends {_UNCONDITIONAL}",
    nf.flows.CircularCoupledRationalQuadraticSpline: "a spline coupling with circular tails (the fused spline has "
    f"linear tails only) that sends {_UNCONDITIONAL}",
}
