"""From a name on the command line to a :class:`FlowDataset`: the built-in sets by name, anything else as a path."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .dataset import DataError, FlowDataset, split_indices
from .digits import DIGIT_LEVELS, load_digit_images
from .files import read_user_data
from .toys import TOYS, make_toy

BUILTIN = (*TOYS, "digits")
TEST_FRACTION = 0.2  # of every data set, fixed
TOY_SIZE = 12_000  # points generated per toy: 9600 train, 2400 test
DEFAULT_FILE_LEVELS = 256  # integer user data is taken as 8-bit unless --levels says otherwise


def describe_choices() -> str:
    return f"one of {', '.join(BUILTIN)}, or a path to a .npy/.pt file or a folder of images"


def load_dataset(name: str, *, data_seed: int = 0, levels: Optional[int] = None) -> FlowDataset:
    """The data set ``name`` (built-in) or at path ``name``, split into fixed train and test parts.

    ``data_seed`` fixes the toy points and every split; it is deliberately separate from the training seed.
    ``levels`` overrides the number of grey levels of integer user data (default 256).

    >>> load_dataset("moons")
    FlowDataset('moons', train=9600, test=2400, sample_shape=(2,), continuous)
    """
    if name in BUILTIN and levels is not None:
        kind = "continuous 2-D points" if name in TOYS else f"images with a fixed {DIGIT_LEVELS} levels"
        raise DataError(f"--levels applies to integer data files; the built-in {name!r} is {kind}")
    if name in TOYS:
        points = make_toy(name, TOY_SIZE, seed=data_seed)
        train, test = split_indices(len(points), TEST_FRACTION, seed=data_seed)
        return FlowDataset(name, points[train], points[test])
    if name == "digits":
        images, labels = load_digit_images()
        train, test = split_indices(len(images), TEST_FRACTION, seed=data_seed)
        return FlowDataset("digits", images[train], images[test], DIGIT_LEVELS, labels[train], labels[test], 10)
    path = Path(name)
    if not path.exists() and not path.suffix and path.parent == Path("."):
        raise DataError(f"unknown data set {name!r}: use {describe_choices()}")
    samples = read_user_data(path)
    if len(samples) < 2:
        raise DataError(f"{path} has {len(samples)} sample(s); a train and a test split need at least 2")
    train, test = split_indices(len(samples), TEST_FRACTION, seed=data_seed)
    if samples.dtype.is_floating_point:
        if levels is not None:
            raise DataError(f"--levels applies to integer data, but {path} holds floats (continuous data)")
        return FlowDataset(path.name, samples[train], samples[test])
    levels = levels or DEFAULT_FILE_LEVELS
    low, high = int(samples.min()), int(samples.max())
    if low < 0 or high >= levels:
        raise DataError(f"{path}: integer samples must lie in [0, {levels}) for {levels} levels, found [{low}, {high}]")
    return FlowDataset(path.name, samples[train], samples[test], levels)
