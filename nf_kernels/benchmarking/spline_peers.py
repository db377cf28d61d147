"""The peers' own rational-quadratic splines, called the way their coupling layers call them, and how far their
numbers agree with nf_kernels' (benchmarks/spline_op.py).

Each peer takes the transformed elements alone, ``x`` of ``[B, D]``, and their parameters as ``[B, D, P]`` (a view
of the op's ``params``), and returns ``y`` and the per-sample log-det (its per-element terms summed):

* **nflows**: ``unconstrained_rational_quadratic_spline(tails="linear")``, the function nf_kernels' spline
  follows exactly (the same parameter map, minima 1e-3): the same inputs give the same numbers.
* **zuko**: ``zuko.transforms.MonotonicRQSTransform(widths, heights, derivatives, bound, slope=1e-3)``. The spline
  between the knots is the same, but the map from the unconstrained parameters differs: zuko soft-clamps them
  (``u / (1 + |2u / log(slope)|)`` for widths and heights, ``u / (1 + |u / log(slope)|)`` for derivatives), takes
  a plain softmax (no minimal bin width or height) and ``exp`` of the derivatives (nflows: ``1e-3 + softplus``).
  The benchmark feeds it the same raw parameters, so it does the same amount of work on different knots;
  :func:`zuko_agreement` checks the spline itself by handing zuko nf_kernels' knots. zuko's inverse computes no
  log-det of its own: ``transform.inv.call_and_ladj(y)`` inverts, then evaluates the forward spline at the result
  for the log-det, which is what a zuko user gets and what is timed.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..backends import reference_spline
from .spline_cases import BOUND

MINIMUM = 1e-3  # the minimal bin width, bin height and derivative of nf_kernels and nflows; zuko's slope
PEERS = ("nflows", "zuko")

SplineFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def peer_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _split(params: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return params[..., :bins], params[..., bins : 2 * bins], params[..., 2 * bins :]


def nflows_spline(x: torch.Tensor, params: torch.Tensor, bins: int, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    widths, heights, derivatives = _split(params, bins)
    y, terms = unconstrained_rational_quadratic_spline(
        x, widths, heights, derivatives, inverse=inverse, tails="linear", tail_bound=BOUND, min_bin_width=MINIMUM,
        min_bin_height=MINIMUM, min_derivative=MINIMUM,
    )  # fmt: skip
    return y, terms.sum(1)


def zuko_spline(x: torch.Tensor, params: torch.Tensor, bins: int, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from zuko.transforms import MonotonicRQSTransform

    transform = MonotonicRQSTransform(*_split(params, bins), bound=BOUND, slope=MINIMUM)
    y, terms = (transform.inv if inverse else transform).call_and_ladj(x)
    return y, terms.sum(1)


PEER_SPLINES = {"nflows": nflows_spline, "zuko": zuko_spline}


def spline_knots(params: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """nf_kernels' knots of `params` (``[..., P]``): x positions, y positions (``[..., K + 1]``, from -BOUND to
    BOUND) and derivatives (``[..., K + 1]``, 1 at both ends), the SPEC's section 1b map, as the reference computes
    them."""
    widths, heights, derivatives = _split(params, bins)
    horizontal = reference_spline.spline_knots(widths, MINIMUM, BOUND)[0]
    vertical = reference_spline.spline_knots(heights, MINIMUM, BOUND)[0]
    return horizontal, vertical, reference_spline.spline_derivatives(derivatives, MINIMUM)


def zuko_with_knots(knots: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
    """A zuko ``MonotonicRQSTransform`` whose knots are given rather than made from unconstrained parameters
    (it keeps them as ``horizontal``, ``vertical`` and ``derivatives``; its constructor only computes those)."""
    from torch.distributions import Transform
    from zuko.transforms import MonotonicRQSTransform

    transform = MonotonicRQSTransform.__new__(MonotonicRQSTransform)
    Transform.__init__(transform)
    transform.horizontal, transform.vertical, transform.derivatives = knots
    return transform


@dataclass(frozen=True)
class Agreement:
    """The largest differences between a peer and nf_kernels' reference, float64, on the same knots."""

    peer: str
    bins: int
    y: float  # max |y_peer - y_ours| over the forward and the inverse
    logdet: float  # max |logdet_peer - logdet_ours| over both
    raw_params_y: Optional[float] = None  # zuko: max |y| difference when given the raw parameters (its own map)

    def __str__(self) -> str:
        text = f"{self.peer}, K={self.bins}: max |dy| {self.y:.2g}, max |dlogdet| {self.logdet:.2g}"
        if self.raw_params_y is not None:
            text += f" on nf_kernels' knots (on the same raw parameters its own map gives max |dy| {self.raw_params_y:.2g})"
        return text


def _ours(x: torch.Tensor, params: torch.Tensor, bins: int, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """nf_kernels' reference on the transformed elements alone: x [B, D] as one kept-free channel."""
    import nf_kernels

    batch, features = x.shape
    channels = params.transpose(1, 2).reshape(batch, -1, 1, features)  # [B, P, D] as [B, 1 * P, 1, D]
    y, logdet = nf_kernels.spline_coupling(x.view(batch, 1, 1, features), channels, bins=bins, bound=BOUND,
                                           reverse=inverse, backend="reference")  # fmt: skip
    return y.view(batch, features), logdet


def nflows_agreement(bins: int, samples: int = 64, features: int = 8, seed: int = 0) -> Agreement:
    """nflows against nf_kernels' reference in float64 on standard-normal inputs (some outside the interval)."""
    x, params = _check_inputs(bins, samples, features, seed)
    return _agreement("nflows", bins, x, params, lambda v, inverse: nflows_spline(v, params, bins, inverse))


def zuko_agreement(bins: int, samples: int = 64, features: int = 8, seed: int = 0) -> Agreement:
    """zuko's spline on nf_kernels' knots against nf_kernels' reference, float64; and how far its own parameter
    map lands from them on the same raw parameters."""
    x, params = _check_inputs(bins, samples, features, seed)
    transform = zuko_with_knots(spline_knots(params, bins))

    def call(v: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y, terms = (transform.inv if inverse else transform).call_and_ladj(v)
        return y, terms.sum(1)

    agreement = _agreement("zuko", bins, x, params, call)
    raw = (zuko_spline(x, params, bins, False)[0] - _ours(x, params, bins, False)[0]).abs().max().item()
    return Agreement("zuko", bins, agreement.y, agreement.logdet, raw)


def _check_inputs(bins: int, samples: int, features: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(samples, features, generator=generator, dtype=torch.float64)
    params = torch.randn(samples, features, 3 * bins - 1, generator=generator, dtype=torch.float64)
    return x, params


def _agreement(peer: str, bins: int, x: torch.Tensor, params: torch.Tensor, call) -> Agreement:
    dy = dlogdet = 0.0
    for inverse in (False, True):
        y, logdet = call(x, inverse)
        y_ours, logdet_ours = _ours(x, params, bins, inverse)
        dy = max(dy, (y - y_ours).abs().max().item())
        dlogdet = max(dlogdet, (logdet - logdet_ours).abs().max().item())
    return Agreement(peer, bins, dy, dlogdet)
