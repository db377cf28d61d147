"""Drop-in class for zuko 1.6: GeneralCouplingTransform with its affine (or additive) univariate, fused.

zuko's transforms map data to noise (`NormalizingFlow.log_prob` calls `transform.call_and_ladj(x)`), sampling runs
`transform.inv`; the log-det is that of the map computed. Features are the last dim (any batch dims before it);
`mask` is True where a feature is kept (zuko's x_a), and the hyper-network emits, for each transformed feature in
turn, its (shift, scale) pair: the op's h_layout="shift_scale_pairs", compact. MonotonicAffineTransform soft-clamps
the log-scale, s / (1 + |s / log(slope)|): the op's "softclamp" with clamp = -log(slope). zuko's own RealNVP and NICE
alternate checkered masks (the op's bool mask with a compact h); a halves mask is the op's "half".

    >>> import torch
    >>> from nf_kernels.compat import zuko as fused
    >>> t = fused.GeneralCouplingTransform(4, mask=torch.tensor([True, True, False, False]))
    >>> y, ladj = t().call_and_ladj(torch.randn(3, 4))
    >>> y.shape, ladj.shape
    (torch.Size([3, 4]), torch.Size([3]))
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Optional

import torch
from torch import Tensor
from torch.distributions import Transform, constraints

from .. import functional
from ._adopt import Accelerated, Unsupported
from ._library import require
from ._splits import half_flip, half_kept

zuko = require("zuko")
zuko_transforms = require("zuko.transforms")


def _affine_slope(univariate) -> Optional[float]:
    """MonotonicAffineTransform's slope when `univariate` is it (or a partial of it setting `slope` only), else None."""
    target, keywords = univariate, {}
    if isinstance(univariate, functools.partial) and not univariate.args:
        target, keywords = univariate.func, dict(univariate.keywords)
    if target is not zuko_transforms.MonotonicAffineTransform or set(keywords) - {"slope"}:
        return None
    default = inspect.signature(zuko_transforms.MonotonicAffineTransform).parameters["slope"].default
    return float(keywords.get("slope", default))


class GeneralCouplingTransform(Accelerated, zuko.flows.GeneralCouplingTransform):
    """zuko's GeneralCouplingTransform with MonotonicAffineTransform (or AdditiveTransform), through the fused op."""

    @classmethod
    def check(cls, layer) -> None:
        slope = _affine_slope(layer.univariate)
        if slope is not None:
            if tuple(map(tuple, layer.shapes)) != ((), ()):
                raise Unsupported(f"MonotonicAffineTransform with parameter shapes {layer.shapes}, not ((), ())")
            if not 0.0 < slope < 1.0:
                raise Unsupported(f"MonotonicAffineTransform slope={slope}: the soft clamp needs 0 < slope < 1")
        elif layer.univariate is zuko_transforms.AdditiveTransform:
            if tuple(map(tuple, layer.shapes)) != ((),):
                raise Unsupported(f"AdditiveTransform with parameter shapes {layer.shapes}, not ((),)")
        else:
            raise Unsupported(f"univariate={getattr(layer.univariate, '__name__', layer.univariate)!r}: only "
                              "MonotonicAffineTransform and AdditiveTransform are fused")  # fmt: skip

    def prepare(self) -> None:
        slope = _affine_slope(self.univariate)
        # The soft clamp's bound, -log(slope) (None: additive).
        self._nfk_bound = None if slope is None else -math.log(slope)
        self._nfk_flip = half_flip(self.mask.tolist())
        # zuko's x_a as an index known in advance (zuko finds it with nonzero on each call): no data-dependent shape.
        self.register_buffer("_nfk_kept_index", self.mask.nonzero().squeeze(-1), persistent=False)

    def forward(self, c: Optional[Tensor] = None) -> Transform:
        return FusedCouplingTransform(self, c)

    def couple(self, x: Tensor, context: Optional[Tensor], reverse: bool) -> tuple[Tensor, Tensor]:
        """(y, log-det) of the coupling (or its inverse) of x, features last."""
        if self._nfk_flip is not None:
            x_a = half_kept(x, self._nfk_flip, dim=-1)
        else:
            x_a = x.index_select(-1, self._nfk_kept_index)
        if context is not None:
            x_a = torch.cat(zuko.utils.broadcast(x_a, context, ignore=1), dim=-1)
        phi = self.hyper(x_a)
        shape = (*phi.shape[:-1], x.shape[-1])  # a context can broadcast the batch
        flat_x = x.expand(shape).reshape(-1, shape[-1])
        flat_h = phi.reshape(-1, phi.shape[-1])
        mask, flip = ("half", self._nfk_flip) if self._nfk_flip is not None else (self.mask, False)
        backend = self.nf_kernels_backend
        if self._nfk_bound is None:
            y, ladj = functional.additive_coupling(flat_x, flat_h, mask=mask, flip=flip, reverse=reverse,
                                                   backend=backend)  # fmt: skip
        else:
            y, ladj = functional.affine_coupling(flat_x, flat_h, mask=mask, flip=flip, scale="softclamp",
                                                 clamp=self._nfk_bound, h_layout="shift_scale_pairs", reverse=reverse,
                                                 backend=backend)  # fmt: skip
        return y.view(shape), ladj.view(shape[:-1]).to(x.dtype)


class FusedCouplingTransform(Transform):
    """What a fused GeneralCouplingTransform builds for a context: zuko's CouplingTransform, computed by one op."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, layer: GeneralCouplingTransform, context: Optional[Tensor], reverse: bool = False):
        super().__init__()
        self.layer, self.context, self.reverse = layer, context, reverse

    def _call(self, x: Tensor) -> Tensor:
        return self.layer.couple(x, self.context, self.reverse)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.layer.couple(y, self.context, not self.reverse)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.layer.couple(x, self.context, self.reverse)[1]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer.couple(x, self.context, self.reverse)

    @property
    def inv(self) -> Transform:
        # The inverse is the same op with reverse=True: one pass for its call_and_ladj too (zuko's sampling with
        # log-densities), where torch's generic inverse would run the forward again for the log-det.
        return FusedCouplingTransform(self.layer, self.context, not self.reverse)


DROP_INS = {GeneralCouplingTransform.replaces: GeneralCouplingTransform}
FLOW_BASE = zuko.lazy.LazyTransform
NOT_FUSED: dict = {}  # zuko's couplings are all GeneralCouplingTransform, whose univariate `check` judges
