"""scikit-learn's bundled 8x8 handwritten digits (1797 images, no download) as 1x8x8 images with 17 grey levels."""

from __future__ import annotations

import torch

from .dataset import DataError

DIGIT_LEVELS = 17  # the UCI digits count ink in 4x4 blocks: 0..16


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(images ``[1797, 1, 8, 8]`` int64 in ``[0, 17)``, labels ``[1797]`` int64)."""
    try:
        from sklearn.datasets import load_digits  # sklearn is slow to import: only when digits are asked for
    except ImportError:
        raise DataError("the digits data set is bundled with scikit-learn, which is not installed "
                        "(pip install scikit-learn)") from None

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64).round().long().unsqueeze(1)
    return images, torch.as_tensor(bunch.target, dtype=torch.long)
