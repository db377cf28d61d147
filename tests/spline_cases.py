"""The spline coupling's test cases (SPEC section 1b): masks, directions, parameter scales and input kinds, and
the SPEC's log-det bound for it. Used by tests/test_spline_*.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import nf_kernels
from conftest import CPU_BACKENDS, LOGDET_TOLERANCE, TOLERANCE, MaskCase
from nf_kernels import _dispatch
from nf_kernels._arguments import compute_dtype
from nf_kernels._spline_arguments import SplineConfig
from nf_kernels.backends import reference_spline

# Every backend that runs here and has the spline methods: a kernel helper's backend is tested by adding them.
SPLINE_BACKENDS = [name for name in CPU_BACKENDS if _dispatch.why_spline_unsupported(name) is None]
FUSED_SPLINE_BACKENDS = [name for name in SPLINE_BACKENDS if name != "reference"]

SPLINE_MASKS = [
    MaskCase("half", (3, 7)),  # feature split of vectors, odd width
    MaskCase("half", (2, 5, 3, 4)),  # channel split of images, odd channel count
    MaskCase("checkerboard", (2, 3, 5, 7)),  # odd height and width
    MaskCase("bool", (3, 11)),
    MaskCase("bool", (2, 3, 4, 5)),
]
# Unconstrained parameters of these magnitudes: near 0 (a zero-initialized conditioner), ordinary, large (bins
# of the minimal width next to wide ones, steep and flat slopes).
PARAM_SCALES = (1e-6, 1.0, 10.0)
# Where the inputs lie: inside the interval, half of them outside, exactly on knots, at and just beyond +-bound.
INPUT_KINDS = ("inside", "mixed", "knots", "edges")


@dataclass(frozen=True)
class SplineCase:
    mask: MaskCase
    flip: bool = False
    reverse: bool = False
    bins: int = 5
    bound: float = 2.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 2e-3
    min_derivative: float = 1e-3

    @property
    def per_element(self) -> int:
        return 3 * self.bins - 1

    def params_shape(self) -> tuple:
        shape = list(self.mask.shape)
        channels = shape[1]
        shape[1] = (channels - channels // 2 if self.mask.name == "half" else channels) * self.per_element
        return tuple(shape)

    def config(self) -> SplineConfig:
        kind = {"bool": "tensor"}.get(self.mask.name, self.mask.name)
        return SplineConfig(kind, self.flip, self.bins, self.bound, self.min_bin_width, self.min_bin_height,
                            self.min_derivative, self.reverse)  # fmt: skip

    def knots(self, params: torch.Tensor) -> torch.Tensor:
        """The knots the input runs over ([..., K + 1] per element of x's shape, in x's compute dtype): x-knots
        forward, y-knots in reverse. For "half" the kept channels get the first transformed channel's knots."""
        p = params.to(compute_dtype(params.dtype))
        batch = p.shape[0]
        p = p.view(batch, -1, self.per_element, *p.shape[2:]).movedim(2, -1)
        if self.reverse:
            unnormalized, minimum = p[..., self.bins : 2 * self.bins], self.min_bin_height
        else:
            unnormalized, minimum = p[..., : self.bins], self.min_bin_width
        knots = reference_spline.spline_knots(unnormalized, minimum, self.bound)[0]
        if self.mask.name == "half":
            channels = self.mask.shape[1]
            index = torch.arange(channels).clamp(max=knots.shape[1] - 1)
            knots = knots[:, index]
        return knots

    def inputs(self, dtype=torch.float32, seed=0, scale=1.0, kind="inside"):
        """(x, params): params of `scale` times standard normal, x of the kind of INPUT_KINDS."""
        g = torch.Generator().manual_seed(seed)
        params = (scale * torch.randn(self.params_shape(), generator=g, dtype=torch.float64)).to(dtype)
        shape = self.mask.shape
        if kind == "inside":
            x = self.bound * (2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1)
        elif kind == "mixed":
            x = 2 * self.bound * torch.randn(shape, generator=g, dtype=torch.float64)
        elif kind == "knots":
            knots = self.knots(params).double()
            pick = torch.randint(0, self.bins + 1, shape, generator=g).unsqueeze(-1)
            x = knots.gather(-1, pick).squeeze(-1)
        elif kind == "edges":
            b = torch.tensor(self.bound, dtype=dtype)
            beyond = torch.nextafter(b, torch.tensor(math.inf, dtype=dtype)).double()
            values = torch.tensor([-beyond, -self.bound, self.bound, beyond, 0.0], dtype=torch.float64)
            x = values[torch.randint(0, len(values), shape, generator=g)]
        else:
            raise ValueError(kind)
        return x.to(dtype), params

    def __call__(self, x, params, backend, mask=None):
        mask = self.mask.mask(x.device) if mask is None else mask
        return nf_kernels.spline_coupling(
            x, params, mask=mask, flip=self.flip, bins=self.bins, bound=self.bound, min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height, min_derivative=self.min_derivative, reverse=self.reverse,
            backend=backend,
        )  # fmt: skip

    def logdet_condition(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Per sample, over the transformed elements, sum of max(|L|, 1) + bound |dL/dx| (L = log dy/dx of the
        element, float64): the SPEC's bound on the spline's log-det error is tol times this. Each term is a
        difference of logs of O(1) quantities, and the knots carry rounding errors of order eps * bound, which
        move the input against them; dL/dx is taken on both sides of x (it jumps at knots)."""
        config, p = self.config(), self._per_element(params.double())
        terms = reference_spline.rational_quadratic(x.double(), p, config)[1].abs().clamp(min=1.0)
        sensitivity = torch.zeros_like(terms)
        for shift in (-1e-9, 0.0, 1e-9):
            moved = (x.double() + shift * self.bound).requires_grad_(True)
            log_slope = reference_spline.rational_quadratic(moved, p, config)[1]
            (slope_gradient,) = torch.autograd.grad(log_slope.sum(), moved)
            sensitivity = torch.maximum(sensitivity, slope_gradient.abs())
        terms = terms + self.bound * sensitivity
        return torch.where(self.transformed(x.shape), terms, 0.0).flatten(1).sum(1)

    def output_scale(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Per element, |out| + bound (1 + |d out / d in|) in float64 (|x| where kept): the SPEC bounds the
        spline's output error by tol times its norm. The knots carry rounding errors of order eps * bound in both
        axes, which move the output by that much plus the input's share times the slope."""
        out, log_slope = reference_spline.rational_quadratic(
            x.double(), self._per_element(params.double()), self.config()
        )
        transformed = self.transformed(x.shape)
        scale = out.abs() + self.bound * (1.0 + log_slope.exp())
        return torch.where(transformed, scale, x.double().abs())

    def _per_element(self, params: torch.Tensor) -> torch.Tensor:
        """params spread to [B, *x.shape[1:], P] (for "half": the transformed channels' params at their positions,
        zeros at the kept ones)."""
        batch = params.shape[0]
        p = params.view(batch, -1, self.per_element, *params.shape[2:]).movedim(2, -1)
        if self.mask.name != "half":
            return p
        channels = self.mask.shape[1]
        full = p.new_zeros((batch, channels, *p.shape[2:]))
        kept = channels // 2
        if self.flip:
            full[:, : channels - kept] = p
        else:
            full[:, kept:] = p
        return full

    def transformed(self, x_shape) -> torch.Tensor:
        """True where an element of x is transformed (SPEC mask table), shaped like x."""
        shape = tuple(x_shape)
        if self.mask.name == "half":
            channels = shape[1]
            kept = channels // 2
            out = torch.zeros(shape, dtype=torch.bool)
            if self.flip:
                out[:, : channels - kept] = True
            else:
                out[:, kept:] = True
            return out
        if self.mask.name == "checkerboard":
            height, width = shape[2:]
            i, j = torch.arange(height).view(height, 1), torch.arange(width).view(1, width)
            kept = (i + j) % 2 == (0 if self.flip else 1)
            return (~kept).expand(shape)
        mask = self.mask.mask()
        return (mask if self.flip else ~mask).expand(shape)

    def __str__(self) -> str:
        return f"{self.mask}{'-flip' if self.flip else ''}{'-reverse' if self.reverse else ''}"


def all_spline_cases(masks=SPLINE_MASKS):
    return [SplineCase(mask, flip, reverse) for mask in masks for flip in (False, True) for reverse in (False, True)]


def assert_spline_output_within_bound(out, out_ref, scale, x_dtype) -> None:
    """SPEC section 3 for the spline: ||out - ref|| <= tol ||scale|| (scale: SplineCase.output_scale)."""
    error = (out.double() - out_ref.double()).norm().item()
    bound = TOLERANCE[x_dtype] * scale.norm().item()
    assert error <= bound, f"output error {error} above the bound {bound} ({x_dtype})"


def assert_spline_logdet_within_bound(logdet, logdet_ref, condition, x_dtype) -> None:
    error = (logdet.double() - logdet_ref.double()).abs()
    bound = LOGDET_TOLERANCE[x_dtype] * condition
    assert not torch.isnan(error).any(), (logdet, logdet_ref)
    assert (error <= bound).all(), f"log-det error {error.tolist()} above the bound {bound.tolist()} ({x_dtype})"
