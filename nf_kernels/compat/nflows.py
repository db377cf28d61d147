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

import math
import warnings
from typing import Optional

import torch
from torch import Tensor

from .. import functional
from .._spline_arguments import check_spline_scalars
from ._adopt import Accelerated, Unsupported
from ._library import require
from ._splits import channel_mask, half_flip, half_kept
from ._spline_params import op_params, per_feature

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
        y, logabsdet = self._couple(inputs, params, mask, flip, reverse)
        return y, logabsdet.to(inputs.dtype)  # nflows sums in the inputs' dtype

    def _couple(self, inputs: Tensor, params: Tensor, mask, flip: bool, reverse: bool):
        """(y, log-det) of the op on the inputs with the transform net's output `params`."""
        backend = self.nf_kernels_backend
        if not self._affine:
            return functional.additive_coupling(inputs, params, mask=mask, flip=flip, reverse=reverse, backend=backend)
        return functional.affine_coupling(inputs, params, mask=mask, flip=flip, scale="nflows_sigmoid",
                                          h_layout="shift_scale", reverse=reverse, backend=backend)  # fmt: skip

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


class PiecewiseRationalQuadraticCouplingTransform(_FusedCouplingTransform,
                                                  nflows_transforms.PiecewiseRationalQuadraticCouplingTransform):
    """nflows' PiecewiseRationalQuadraticCouplingTransform with tails="linear": the op's spline, nflows' numbers.

    nflows divides the unnormalized widths and heights by sqrt(hidden_features) (or sqrt(hidden_channels)) of its
    transform net where the net has that attribute (its ResidualNet, ConvResidualNet): so does this class, one
    division of those 2K parameters per element before the op (a copy of the net's output, with the scatter of
    non-"half" masks in _spline_params)."""

    _affine = None  # not an affine coupling: _couple below is the spline's

    @classmethod
    def check(cls, layer) -> None:
        super().check(layer)
        if layer.tails != "linear":
            raise Unsupported(f"tails={layer.tails!r}: the fused spline has linear tails (the identity outside "
                              "[-tail_bound, tail_bound]) only, tails='linear'")  # fmt: skip
        try:
            check_spline_scalars(layer.num_bins, layer.tail_bound, layer.min_bin_width, layer.min_bin_height,
                                 layer.min_derivative)  # fmt: skip
        except (TypeError, ValueError) as problem:
            raise Unsupported(f"an nflows spline the fused op cannot take: {problem}") from problem

    def prepare(self) -> None:
        super().prepare()
        if _softmax_divisor(self.transform_net) is None:
            warnings.warn(f"{type(self.transform_net).__name__} has no hidden_features or hidden_channels: nflows "
                          "(and this drop-in) pass its widths and heights to the softmax unscaled", stacklevel=3)  # fmt: skip

    def _couple(self, inputs: Tensor, params: Tensor, mask, flip: bool, reverse: bool):
        bins = self.num_bins
        p = per_feature(params, 3 * bins - 1)
        divisor = _softmax_divisor(self.transform_net)  # read on each call, as nflows does
        if divisor is not None:
            p = torch.cat([p[:, :, : 2 * bins] / divisor, p[:, :, 2 * bins :]], dim=2)
        transformed = None if self._nfk_flip is not None else self.transform_features
        return functional.spline_coupling(
            inputs, op_params(p, transformed, self.features), mask=mask, flip=flip, bins=bins,
            bound=float(self.tail_bound), min_bin_width=self.min_bin_width, min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative, reverse=reverse, backend=self.nf_kernels_backend,
        )  # fmt: skip


def _softmax_divisor(net) -> Optional[float]:
    """What nflows divides the unnormalized widths and heights by: sqrt of the net's hidden_features, else of its
    hidden_channels, else nothing (None)."""
    for name in ("hidden_features", "hidden_channels"):
        if hasattr(net, name):
            return math.sqrt(getattr(net, name))
    return None


DROP_INS = {cls.replaces: cls for cls in (AffineCouplingTransform, AdditiveCouplingTransform,
                                          PiecewiseRationalQuadraticCouplingTransform)}  # fmt: skip
FLOW_BASE = nflows_transforms.Transform
# Coupling layers with no drop-in, and why (accelerate reports it). The rational-quadratic one has a drop-in
# (DROP_INS, looked up first), which judges its tails itself.
NOT_FUSED = {require("nflows.transforms.coupling").PiecewiseCouplingTransform:
             "a piecewise linear, quadratic or cubic spline coupling: the fused spline is rational-quadratic"}
