"""Simple density models that a trained flow must beat: the yardsticks of the quality numbers in the README.

* images: every pixel independent, each with its own categorical distribution over the grey levels fitted on
  the training split (add-one smoothing). Under uniform dequantization its bits/dim is exactly the mean code
  length of the test pixels, so it is directly comparable with a flow's bits/dim.
* 2-D: a Gaussian kernel density estimate with its bandwidth chosen on a validation split held out of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..data import DataError, FlowDataset, split_indices
from ..errors import UserError


class BaselineUnavailable(UserError, RuntimeError):
    """scikit-learn, which the KDE baseline needs, is not installed."""


def independent_pixels_bits_per_dim(data: FlowDataset, smoothing: float = 1.0) -> float:
    """Test bits/dim of per-pixel categorical distributions fitted on the training split.

    >>> from nf_kernels.data import load_dataset
    >>> round(independent_pixels_bits_per_dim(load_dataset("digits")), 2)
    2.42
    """
    if not data.discrete:
        raise DataError(f"{data.name} is continuous: the per-pixel baseline is for discrete (image) data")
    train = data.train.reshape(len(data.train), -1)
    counts = torch.zeros(train.shape[1], data.levels, dtype=torch.float64)
    counts.scatter_add_(1, train.T, torch.ones(train.T.shape, dtype=torch.float64))
    log2_probs = torch.log2((counts + smoothing) / (counts + smoothing).sum(1, keepdim=True))
    test = data.test.reshape(len(data.test), -1)
    return -log2_probs.gather(1, test.T).mean().item()


@dataclass(frozen=True)
class KdeResult:
    nll: float  # mean test negative log-likelihood, nats per sample
    bandwidth: float  # chosen on the validation split


def kde_nll(data: FlowDataset, bandwidths: Sequence[float] = tuple(0.02 * 1.25**k for k in range(20)),
            validation_fraction: float = 0.2, max_points: int = 4000) -> KdeResult:  # fmt: skip
    """Test NLL of a Gaussian KDE on up to ``max_points`` training points, its bandwidth picked on validation."""
    try:
        from sklearn.neighbors import KernelDensity  # heavy import: only for this measurement
    except ImportError:
        raise BaselineUnavailable("the KDE baseline needs scikit-learn, which is not installed "
                                  "(pip install scikit-learn)") from None

    if data.discrete:
        raise DataError(f"{data.name} is discrete: the KDE baseline is for continuous data")
    fit_indices, validation_indices = split_indices(len(data.train), validation_fraction, seed=1)
    fit = data.train[fit_indices[:max_points]].double().numpy()
    validation = data.train[validation_indices].double().numpy()

    def model(bandwidth: float) -> KernelDensity:
        return KernelDensity(bandwidth=bandwidth).fit(fit)

    best = max(bandwidths, key=lambda b: model(b).score_samples(validation).mean())
    nll = -model(best).score_samples(data.test.double().numpy()).mean()
    return KdeResult(float(nll), float(best))


def uniform_bits_per_dim(levels: int) -> float:
    """What a model that knows nothing pays: log2(levels) bits per dimension."""
    return math.log2(levels)


def baseline_for(data: FlowDataset) -> tuple[str, float]:
    """(description, value) of the yardstick for ``data``, in the units of its metric (bits/dim or nats)."""
    if data.discrete:
        return "independent per-pixel categorical, fitted on train", independent_pixels_bits_per_dim(data)
    if data.sample_shape != (2,):
        raise DataError(f"baselines exist for images and 2-D data; {data.name} has samples of shape "
                        f"{data.sample_shape}")
    kde = kde_nll(data)
    return f"Gaussian KDE, bandwidth {kde.bandwidth:.3g} chosen on a validation split", kde.nll
