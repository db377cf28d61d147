"""Drop-in classes for pyro 1.9: AffineCoupling and ConditionalAffineCoupling through the fused op (pyro has no
additive coupling).

pyro's transforms map the base sample towards the data (`_call`, used by sampling); `TransformedDistribution.log_prob`
runs `_inverse` and then `log_abs_det_jacobian(x, y)` of the forward map, which this class answers from the op's
inverse log-det (cached like pyro caches its log-scale) instead of running the hypernet again. The first `split_dim`
entries of dim `dim` are kept; the hypernet returns (mean, log_scale), each over the transformed entries: the op's
h_layout="shift_scale". Where the two are slices of one output (pyro's DenseNN) h is that output, read in place;
otherwise they are concatenated (one copy). The log-scale is clamped to [log_scale_min_clip, log_scale_max_clip] with
the gradient passed through the clamp (pyro's clamp_preserve_gradients): the op's "clip".

    >>> import torch
    >>> from pyro.nn import DenseNN
    >>> from nf_kernels.compat import pyro as fused
    >>> t = fused.AffineCoupling(2, DenseNN(2, [16], [2, 2]))   # was pyro.distributions.transforms.AffineCoupling
    >>> x = torch.randn(3, 4)
    >>> y = t(x)
    >>> y.shape, t.log_abs_det_jacobian(x, y).shape
    (torch.Size([3, 4]), torch.Size([3]))
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Optional

import torch
from torch import Tensor

from .. import functional
from ._adopt import Accelerated, Unsupported
from ._library import require
from ._splits import range_mask

pyro_transforms = require("pyro.distributions.transforms")
pyro_torch_transform = require("pyro.distributions.torch_transform")


def _check_clips(low, high) -> None:
    if not (-math.inf < low < high < math.inf):
        raise Unsupported(f"log_scale_min_clip={low}, log_scale_max_clip={high}: the fused clip needs finite "
                          "bounds, min < max")  # fmt: skip


def _one_output(mean: Tensor, log_scale: Tensor) -> Optional[Tensor]:
    """The hypernet's output both are slices of, [..., 2M] with mean first, or None (then they are concatenated).
    Not while torch.compile traces (it does not trace storage offsets): there the concatenation is the compiler's."""
    if torch.compiler.is_compiling():
        return None
    base = mean._base
    if base is None or log_scale._base is not base or not base.is_contiguous():
        return None
    size = mean.shape[-1]
    # Both laid out as the two halves of each row of a contiguous [..., 2M] tensor: its row strides, mean first.
    rows = torch.empty((*mean.shape[:-1], 2 * size), device="meta").stride()
    if (base.shape[-1] != 2 * size or base.numel() != 2 * mean.numel() or log_scale.shape != mean.shape
            or mean.stride() != rows or log_scale.stride() != rows or mean.storage_offset() != base.storage_offset()
            or log_scale.storage_offset() != base.storage_offset() + size):  # fmt: skip
        return None
    return base


class AffineCoupling(Accelerated, pyro_transforms.AffineCoupling):
    """pyro's AffineCoupling: y = x at the first split_dim entries of dim `dim`, exp(clip(log_scale)) x + mean at
    the rest."""

    @classmethod
    def check(cls, layer) -> None:
        _check_clips(layer.log_scale_min_clip, layer.log_scale_max_clip)

    def prepare(self) -> None:
        self._cached_log_det = None

    def _couple(self, x: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
        """(output, log|det| of the forward map) at input x (the forward's input, or for reverse its output)."""
        event_shape = x.shape[self.dim :]
        flat = x.reshape(-1, *event_shape)  # [B, C, ...]: dim is dim 1
        x1 = x.narrow(self.dim, 0, self.split_dim)
        mean, log_scale = self.nn(x1.reshape(x1.shape[: self.dim] + (-1,)))
        transformed = (flat.shape[0], event_shape[0] - self.split_dim, *event_shape[1:])
        base = _one_output(mean, log_scale)
        if base is None:
            base = torch.cat([mean.reshape(mean.shape[:-1] + (-1,)), log_scale.reshape(log_scale.shape[:-1] + (-1,))], -1)
        h = base.reshape(transformed[0], 2 * transformed[1], *transformed[2:])
        mask, flip = range_mask(flat, 0, self.split_dim)
        y, log_det = functional.affine_coupling(
            flat, h, mask=mask, flip=flip, scale="clip", clamp=(self.log_scale_min_clip, self.log_scale_max_clip),
            h_layout="shift_scale", reverse=reverse, backend=self.nf_kernels_backend,
        )  # fmt: skip
        batch_shape = x.shape[: self.dim]
        return y.view(x.shape), (-log_det if reverse else log_det).view(batch_shape).to(x.dtype)

    def _call(self, x):
        y, self._cached_log_det = self._couple(x, reverse=False)
        return y

    def _inverse(self, y):
        x, self._cached_log_det = self._couple(y, reverse=True)
        return x

    def log_abs_det_jacobian(self, x, y):
        x_old, y_old = self._cached_x_y
        if self._cached_log_det is not None and x is x_old and y is y_old:
            return self._cached_log_det
        return self._couple(x, reverse=False)[1]


class ConditionalAffineCoupling(pyro_transforms.ConditionalAffineCoupling, Accelerated):
    """pyro's ConditionalAffineCoupling: `condition(context)` gives the fused AffineCoupling."""

    @classmethod
    def check(cls, layer) -> None:
        defaults = inspect.signature(pyro_transforms.AffineCoupling).parameters
        _check_clips(*(layer.kwargs.get(name, defaults[name].default)
                       for name in ("log_scale_min_clip", "log_scale_max_clip")))  # fmt: skip

    def condition(self, context):
        layer = AffineCoupling(self.split_dim, partial(self.nn, context=context), **self.kwargs)
        layer.nf_kernels_backend = self.nf_kernels_backend
        return layer


DROP_INS = {cls.replaces: cls for cls in (AffineCoupling, ConditionalAffineCoupling)}
FLOW_BASE = pyro_torch_transform.TransformModule
# Coupling layers with no drop-in, and why (accelerate reports it).
NOT_FUSED = {pyro_transforms.SplineCoupling: "a spline coupling with pyro's own splines (order='linear', the default, "
             "is a rational-linear spline, and unless identity=True the kept part goes through an element-wise spline "
             "too): no drop-in maps them onto the fused rational-quadratic spline"}
