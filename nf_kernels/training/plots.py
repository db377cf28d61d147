"""Pictures a user can open: a sample grid for images, learned density plus samples for 2-D, learning curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from .files import naming

PLOT_BOX = 4.5  # the 2-D toys live in about [-4, 4]^2


class PlottingUnavailable(UserError, RuntimeError):
    """matplotlib is not installed: pictures cannot be written (everything else works)."""


def _pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend, imported on first use: matplotlib is optional at run time."""
    try:
        import matplotlib
    except ImportError:
        raise PlottingUnavailable("matplotlib is not installed, so no pictures can be written "
                                  "(pip install matplotlib; .npy/.pt outputs work without it)") from None
    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def to_displayable(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Model-space images in ``[0, 1)`` back to their grey level, as a ``[0, 1]`` intensity for display."""
    return (images.float() * levels).floor().clamp(0, levels - 1) / (levels - 1)


def save_image_grid(images: torch.Tensor, path: Path, *, columns: Optional[int] = None, pixel_size: int = 0) -> Path:
    """Tile ``[N, C, H, W]`` intensities in ``[0, 1]`` into one PNG, each image pixel ``pixel_size`` wide.

    Small images (8x8 digits) are enlarged so the grid is readable; ``pixel_size=0`` chooses a factor that makes
    each tile about 64 pixels wide.
    """
    images = images.detach().float().clamp(0, 1).cpu()
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    factor = pixel_size or max(1, 64 // max(height, width))
    pad = 1
    canvas = torch.ones(channels, rows * (height + pad) + pad, columns * (width + pad) + pad)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        canvas[:, top : top + height, left : left + width] = images[index]
    canvas = canvas.repeat_interleave(factor, 1).repeat_interleave(factor, 2)
    array = canvas[0].numpy() if channels == 1 else canvas[:3].permute(1, 2, 0).numpy()
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path):
        plt.imsave(path, array, cmap="gray" if channels == 1 else None, vmin=0, vmax=1)
    return path


@torch.no_grad()
def save_density_plot(flow: torch.nn.Module, data_points: torch.Tensor, samples: torch.Tensor, path: Path,
                      *, resolution: int = 200, context: Optional[torch.Tensor] = None) -> Path:  # fmt: skip
    """Two panels: the learned density on a grid, and model samples over the test data."""
    plt = _pyplot()
    axis = torch.linspace(-PLOT_BOX, PLOT_BOX, resolution)
    grid = torch.cartesian_prod(axis, axis).flip(1)  # rows scan y, columns scan x
    reference = next(flow.parameters())  # the grid in the model's device and dtype (float64 runs included)
    density = torch.cat([flow.log_prob(chunk.to(reference.device, reference.dtype), context).exp().float().cpu()
                         for chunk in grid.split(10_000)])  # fmt: skip
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 5))
    left.imshow(density.reshape(resolution, resolution).numpy(), origin="lower", cmap="magma",
                extent=(-PLOT_BOX, PLOT_BOX, -PLOT_BOX, PLOT_BOX))  # fmt: skip
    left.set_title("learned density")
    right.scatter(*data_points[:2000].T.cpu().numpy(), s=2, c="0.6", label="test data")
    right.scatter(*samples[:2000].T.cpu().numpy(), s=2, c="tab:red", label="model samples")
    right.set(xlim=(-PLOT_BOX, PLOT_BOX), ylim=(-PLOT_BOX, PLOT_BOX), aspect="equal", title="samples over data")
    right.legend(loc="upper right", markerscale=4)
    return _save(figure, path)


def save_learning_curves(records: Sequence[dict[str, Any]], metric: str, path: Path,
                         labels: Sequence[str] = ("train", "test")) -> Path:  # fmt: skip
    """The metric against the step, one line per split, from the records of a ``metrics.jsonl``."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4))
    for split in labels:
        points = [(r["step"], r[metric]) for r in records if r.get("split") == split and metric in r]
        if points:
            axes.plot(*np.array(points).T, label=split, marker="o" if split == "test" else None, markersize=3)
    axes.set(xlabel="step", ylabel=metric.replace("_", " "))
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    try:
        with naming(path):
            figure.savefig(path, dpi=100)
    finally:
        _pyplot().close(figure)
    return path
