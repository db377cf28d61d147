"""The user's own data: a ``.npy`` / ``.pt`` tensor file, or a folder of 8-bit images.

Rules, so nothing is guessed silently:

* a tensor file holds one array ``[N, ...]``; ``[N, D]`` is vector data, ``[N, C, H, W]`` an image batch
  (channels first) and ``[N, H, W]`` single-channel images;
* integer arrays are discrete with 256 levels (8-bit) unless told otherwise, float arrays are continuous;
* a folder is every ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.gif`` in it (not recursive), all the same size,
  read as 8-bit grey when every image is stored as grey, else as RGB.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .dataset import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TENSOR_SUFFIXES = (".npy", ".pt", ".pth")


def _read_tensor_file(path: Path) -> torch.Tensor:
    try:
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or foreign file: say which one and why
        raise DataError(f"cannot read {path}: {type(error).__name__}: {error}") from None
    if not isinstance(loaded, torch.Tensor):
        raise DataError(f"{path} must hold a single tensor, found a {type(loaded).__name__}")
    return loaded


def _read_image_folder(folder: Path) -> torch.Tensor:
    from PIL import Image  # matplotlib depends on Pillow, so it is always there

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder} has no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    images = [Image.open(p) for p in files]
    grey = all(image.mode in ("L", "1") for image in images)  # palette or colour images are read as RGB
    mode = "L" if grey else "RGB"
    arrays = [np.asarray(im.convert(mode), dtype=np.uint8) for im in images]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise DataError(f"images in {folder} differ in size ({', '.join(map(str, sorted(sizes)))}); resize them to one size")
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.unsqueeze(1) if mode == "L" else stacked.permute(0, 3, 1, 2).contiguous()


def read_user_data(path: Path) -> torch.Tensor:
    """The samples in ``path`` as ``[N, D]`` or ``[N, C, H, W]``, integer (discrete) or float32 (continuous)."""
    if not path.exists():
        raise DataError(f"no such data file or folder: {path}")
    if path.is_dir():
        samples = _read_image_folder(path)
    elif path.suffix in TENSOR_SUFFIXES:
        samples = _read_tensor_file(path)
    else:
        raise DataError(f"{path}: unknown data format; use a {'/'.join(TENSOR_SUFFIXES)} tensor file or a folder of images")
    if samples.dim() == 3:
        samples = samples.unsqueeze(1)
    if samples.dim() not in (2, 4):
        raise DataError(f"{path}: expected [N, D], [N, H, W] or [N, C, H, W] samples, got shape {tuple(samples.shape)}")
    if samples.dtype.is_floating_point:
        return _finite_float32(samples, path)
    if samples.dtype == torch.bool or samples.dtype.is_complex:
        raise DataError(f"{path}: samples must be integers or floats, got {samples.dtype}")
    return samples.long()


def _finite_float32(samples: torch.Tensor, path: Path) -> torch.Tensor:
    """``samples`` as float32; a :class:`DataError` naming the first row with a NaN or an infinity.

    Checked here, at load time: in training, one such value only shows up later as a NaN loss.
    """
    converted = samples.float()
    bad_rows = (~torch.isfinite(converted)).flatten(1).any(1).nonzero().flatten()
    if len(bad_rows) == 0:
        return converted
    row = int(bad_rows[0])
    column = int((~torch.isfinite(converted[row])).flatten().nonzero()[0])
    value = samples[row].flatten()[column].item()
    too_large = ", too large for float32" if math.isfinite(value) else ""
    raise DataError(f"{path}: row {row} (counting from 0) holds {value}{too_large}; {len(bad_rows)} of {len(samples)} "
                    f"rows hold values that are not finite in float32, which a flow cannot fit: drop or fix them")
