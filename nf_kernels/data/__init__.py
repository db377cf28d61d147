"""Data for training flows, all on local disk: seeded 2-D toys, scikit-learn's 8x8 digits and the user's own files.

    >>> from nf_kernels.data import load_dataset
    >>> load_dataset("digits")
    FlowDataset('digits', train=1438, test=359, sample_shape=(1, 8, 8), levels=17, num_classes=10)
"""

from .dataset import DataError, FlowDataset, dequantize, split_indices
from .registry import BUILTIN, describe_choices, load_dataset
from .toys import TOYS, make_toy

__all__ = [
    "BUILTIN", "DataError", "FlowDataset", "TOYS", "dequantize", "describe_choices",
    "load_dataset", "make_toy", "split_indices",
]  # fmt: skip
