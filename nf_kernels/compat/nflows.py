"""Drop-in classes for nflows 0.14: AffineCouplingTransform and AdditiveCouplingTransform through the fused ops.

nflows' `forward` is its density direction (data to noise: `Flow.log_prob` runs the transform forward) and returns
log|det| of it; `inverse` returns that of the inverse. Its mask is a 1-D tensor over dim 1 (features, or channels of
images), transformed where > 0, and its `transform_net` maps the identity features to the transformed features'
shift then scale (h_layout="shift_scale"), compact: only the transformed features (or channels). The affine scale is
sigmoid(s + 2) + 1e-3, the op's "nflows_sigmoid". Where the mask is a "half" split (nflows' mid split, or +-1 over
halves) the op takes mask="half"; any other mask (nflows' alternating masks) is the op's bool mask with a compact h.

    >>> import torch
    >>> from nflows.nn.nets import ResidualNet
    >>> from nf_kernels.compat import nflows as fused
    >>> layer = fused.AffineCouplingTransform([1, 1, 0, 0], lambda i, o: ResidualNet(i, o, hidden_features=8))
    >>> y, logabsdet = layer(torch.randn(3, 4))   # was nflows.transforms.AffineCouplingTransform
    >>> y.shape, logabsdet.shape
    (torch.Size([3, 4]), torch.Size([3]))
"""

from __future__ import annotations

from torch import Tensor

from .. import functional
from ._adopt import Accelerated, Unsupported
from ._library import require
from ._splits import channel_mask, half_flip, half_kept

nflows_transforms = require("nflows.transforms")


class _FusedCouplingTransform(Accelerated):
    """What the affine and additive drop-ins share: nflows' split, checks and conditioner call, then the op."""

    _affine: bool

    @classmethod
    def check(cls, layer) -> None:
        if layer.unconditional_transform is not None:
            raise Unsupported("an nflows coupling with an unconditional_transform of the identity features (the "
                              "fused op passes them through unchanged)")  # fmt: skip

    def prepare(self) -> None:
        kept = [False] * self.features
        for index in self.identity_features.tolist():
            kept[index] = True
        self._nfk_flip = half_flip(kept)  # None: nflows' mask is no "half" split
        # The op's channel mask, kept (unlike nflows' index buffers) out of the state_dict.
        self.register_buffer("_nfk_kept", self.identity_features.new_zeros(self.features, dtype=bool).index_fill_(
            0, self.identity_features, True), persistent=False)  # fmt: skip

    def _transform(self, inputs: Tensor, context, reverse: bool):
        if inputs.dim() not in (2, 4):
            raise ValueError(f"nflows couplings take 2-D or 4-D inputs, got shape {tuple(inputs.shape)}")
        if inputs.shape[1] != self.features:
            raise ValueError(f"expected {self.features} features (dim 1), got input of shape {tuple(inputs.shape)}")
        if self._nfk_flip is not None:
            identity, mask, flip = half_kept(inputs, self._nfk_flip), "half", self._nfk_flip
        else:
            identity, mask, flip = inputs[:, self.identity_features, ...], channel_mask(self._nfk_kept, inputs), False
        params = self.transform_net(identity, context)
        backend = self.nf_kernels_backend
        if not self._affine:
            y, logabsdet = functional.additive_coupling(inputs, params, mask=mask, flip=flip, reverse=reverse,
                                                        backend=backend)  # fmt: skip
        else:
            y, logabsdet = functional.affine_coupling(inputs, params, mask=mask, flip=flip, scale="nflows_sigmoid",
                                                      h_layout="shift_scale", reverse=reverse, backend=backend)  # fmt: skip
        return y, logabsdet.to(inputs.dtype)  # nflows sums in the inputs' dtype

    def forward(self, inputs, context=None):
        return self._transform(inputs, context, reverse=False)

    def inverse(self, inputs, context=None):
        return self._transform(inputs, context, reverse=True)


class AffineCouplingTransform(_FusedCouplingTransform, nflows_transforms.AffineCouplingTransform):
    """nflows' AffineCouplingTransform: y = x (sigmoid(s + 2) + 1e-3) + t at the transformed features."""

    _affine = True


class AdditiveCouplingTransform(_FusedCouplingTransform, nflows_transforms.AdditiveCouplingTransform):
    """nflows' AdditiveCouplingTransform: y = x + t at the transformed features."""

    _affine = False


DROP_INS = {cls.replaces: cls for cls in (AffineCouplingTransform, AdditiveCouplingTransform)}
FLOW_BASE = nflows_transforms.Transform
# Coupling layers with no drop-in, and why (accelerate reports it).
NOT_FUSED = {require("nflows.transforms.coupling").PiecewiseCouplingTransform:
             "a spline coupling: the fused ops are affine and additive couplings"}
