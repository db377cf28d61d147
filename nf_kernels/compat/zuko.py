"""Drop-in class for zuko 1.6: GeneralCouplingTransform with its affine, additive or spline univariate, fused.

zuko's transforms map data to noise (`NormalizingFlow.log_prob` calls `transform.call_and_ladj(x)`), sampling runs
`transform.inv`; the log-det is that of the map computed. Features are the last dim (any batch dims before it);
`mask` is True where a feature is kept (zuko's x_a), and the hyper-network emits, for each transformed feature in
turn, its (shift, scale) pair: the op's h_layout="shift_scale_pairs", compact. MonotonicAffineTransform soft-clamps
the log-scale, s / (1 + |s / log(slope)|): the op's "softclamp" with clamp = -log(slope). zuko's own RealNVP and NICE
alternate checkered masks (the op's bool mask with a compact h); a halves mask is the op's "half". With
MonotonicRQSTransform (shapes ((K,), (K,), (K - 1,)), zuko's NSF univariate) each transformed feature's 3K - 1
parameters are mapped onto the spline op's (_spline_params says how) and the op computes zuko's spline.

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
import numbers
from typing import Optional

import torch
from torch import Tensor
from torch.distributions import Transform, constraints

from .. import functional
from ._adopt import Accelerated, Unsupported
from ._library import require
from ._splits import half_flip, half_kept
from ._spline_params import op_params

zuko = require("zuko")
zuko_transforms = require("zuko.transforms")


def _options_of(univariate, transform: type, names: set) -> Optional[dict]:
    """The keyword options (defaults filled in) when `univariate` is `transform` or a partial of it setting only
    keywords among `names`, else None."""
    target, keywords = univariate, {}
    if isinstance(univariate, functools.partial) and not univariate.args:
        target, keywords = univariate.func, dict(univariate.keywords)
    if target is not transform or set(keywords) - names:
        return None
    defaults = inspect.signature(transform).parameters
    return {name: keywords.get(name, defaults[name].default) for name in names}


def _affine_slope(univariate) -> Optional[float]:
    """MonotonicAffineTransform's slope when `univariate` is it (or a partial of it setting `slope` only), else None."""
    options = _options_of(univariate, zuko_transforms.MonotonicAffineTransform, {"slope"})
    return None if options is None else float(options["slope"])


def _spline_options(univariate) -> Optional[dict]:
    """MonotonicRQSTransform's bound and slope when `univariate` is it (or a partial of it setting those), else None."""
    return _options_of(univariate, zuko_transforms.MonotonicRQSTransform, {"bound", "slope"})


# zuko's spline is nflows' (the op's) with another map from unconstrained parameters to the spline, which
# _spline_params below inverts into the op's: widths and heights soft-clamped, v / (1 + |2 v / log(slope)|), then a
# softmax with no minimal bin (min_bin_width = min_bin_height = 0); interior derivatives exp(u / (1 + |u / log(slope)|)),
# in (slope, 1 / slope), where the op takes min_derivative + softplus: the op's min_derivative is set below zuko's
# smallest derivative and the parameter is softplus^-1(derivative - min_derivative). Both put the spline on
# [-bound, bound] with derivative 1 at both ends and the identity outside. What differs is rounding only: zuko's end
# knots are bound * (2 * cumsum - 1), the op's exactly +-bound, and zuko counts x == -bound as outside (the same
# value and log-det either way).
MIN_DERIVATIVE_FRACTION = 1e-3  # the op's min_derivative, as a fraction of zuko's slope


def _spline_params(phi: Tensor, bins: int, slope: float) -> Tensor:
    """The op's unconstrained parameters [..., 3K - 1] for zuko's `phi` (its widths, heights and derivatives)."""
    widths, heights, derivatives = phi.split([bins, bins, bins - 1], dim=-1)
    log_slope = math.log(slope)
    widths = widths / (1 + abs(2 * widths / log_slope))
    heights = heights / (1 + abs(2 * heights / log_slope))
    excess = torch.exp(derivatives / (1 + abs(derivatives / log_slope))) - MIN_DERIVATIVE_FRACTION * slope
    # softplus^-1(v) = log(expm1(v)), as v + log(-expm1(-v)): no overflow for derivatives up to 1 / slope.
    return torch.cat([widths, heights, excess + torch.log(-torch.expm1(-excess))], dim=-1)


class GeneralCouplingTransform(Accelerated, zuko.flows.GeneralCouplingTransform):
    """zuko's GeneralCouplingTransform with MonotonicAffineTransform, AdditiveTransform or MonotonicRQSTransform,
    through the fused ops."""

    @classmethod
    def check(cls, layer) -> None:
        shapes = tuple(map(tuple, layer.shapes))
        slope, spline = _affine_slope(layer.univariate), _spline_options(layer.univariate)
        if slope is not None:
            if shapes != ((), ()):
                raise Unsupported(f"MonotonicAffineTransform with parameter shapes {layer.shapes}, not ((), ())")
            if not 0.0 < slope < 1.0:
                raise Unsupported(f"MonotonicAffineTransform slope={slope}: the soft clamp needs 0 < slope < 1")
        elif layer.univariate is zuko_transforms.AdditiveTransform:
            if shapes != ((),):
                raise Unsupported(f"AdditiveTransform with parameter shapes {layer.shapes}, not ((),)")
        elif spline is not None:
            bins = shapes[0][0] if shapes and len(shapes[0]) == 1 else 0
            if bins < 1 or shapes != ((bins,), (bins,), (bins - 1,)):
                raise Unsupported(f"MonotonicRQSTransform with parameter shapes {layer.shapes}, not ((K,), (K,), "
                                  "(K - 1,)) for K >= 1 bins")  # fmt: skip
            slope, bound = spline["slope"], spline["bound"]
            if not (isinstance(slope, numbers.Real) and 0.0 < slope < 1.0):
                raise Unsupported(f"MonotonicRQSTransform slope={slope}: the soft clamps need 0 < slope < 1")
            if not (isinstance(bound, numbers.Real) and 0.0 < bound < math.inf):
                raise Unsupported(f"MonotonicRQSTransform bound={bound}: the fused spline needs one finite bound > 0")
        else:
            raise Unsupported(f"univariate={getattr(layer.univariate, '__name__', layer.univariate)!r}: only "
                              "MonotonicAffineTransform, AdditiveTransform and MonotonicRQSTransform are fused")  # fmt: skip

    def prepare(self) -> None:
        slope, spline = _affine_slope(self.univariate), _spline_options(self.univariate)
        # The soft clamp's bound, -log(slope) (None: additive or a spline).
        self._nfk_bound = None if slope is None else -math.log(slope)
        # The spline's (bins, bound, slope), or None.
        self._nfk_spline = None if spline is None else (self.shapes[0][0], float(spline["bound"]), float(spline["slope"]))
        self._nfk_flip = half_flip(self.mask.tolist())
        # zuko's x_a as an index known in advance (zuko finds it with nonzero on each call): no data-dependent shape.
        self.register_buffer("_nfk_kept_index", self.mask.nonzero().squeeze(-1), persistent=False)
        # The transformed features, where a spline's parameters go for a mask that is not "half".
        self.register_buffer("_nfk_transformed_index", (~self.mask).nonzero().squeeze(-1), persistent=False)

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
        if self._nfk_spline is not None:
            bins, bound, slope = self._nfk_spline
            phi = _spline_params(flat_h.view(flat_h.shape[0], -1, 3 * bins - 1), bins, slope)
            params = op_params(phi, None if self._nfk_flip is not None else self._nfk_transformed_index, shape[-1])
            y, ladj = functional.spline_coupling(flat_x, params, mask=mask, flip=flip, bins=bins, bound=bound,
                                                 min_bin_width=0.0, min_bin_height=0.0,
                                                 min_derivative=MIN_DERIVATIVE_FRACTION * slope, reverse=reverse,
                                                 backend=backend)  # fmt: skip
        elif self._nfk_bound is None:
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
