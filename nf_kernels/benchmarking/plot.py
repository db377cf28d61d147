"""The bandwidth plot: achieved GB/s against size, one line per provider, with the copy bandwidth drawn in.

The copy bandwidth is the rate at which the SPEC's floor is reached (floor time = bytes / copy bandwidth), so a
provider's line touching it means the op runs as fast as memory allows. One panel per (op, direction, mask),
one figure per dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .op_runner import OpResult
from .providers import PROVIDERS


def plot_bandwidth(results: Sequence[OpResult], copy_bytes_per_s: float, path: Path, dtype: str) -> Optional[Path]:
    """Write the plot of `dtype`'s results to `path` (PNG); None when matplotlib is missing or nothing ran."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in results if r.case.dtype == dtype and r.seconds]
    panels = sorted({(r.case.op, r.case.direction, r.case.mask) for r in rows})
    if not panels:
        return None
    columns = min(3, len(panels))
    lines = -(-len(panels) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.6 * lines), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for provider in PROVIDERS:
            points = sorted((r.case.numel, r.gbps) for r in rows if r.provider == provider
                            and (r.case.op, r.case.direction, r.case.mask) == panel)  # fmt: skip
            if points:
                ax.plot(*zip(*points), marker="o", label=provider)
        ax.axhline(copy_bytes_per_s / 1e9, color="black", linestyle="--", label="copy bandwidth (floor)")
        ax.set_xscale("log", base=2)
        rates = [r.gbps for r in rows if (r.case.op, r.case.direction, r.case.mask) == panel]
        if max(rates) > 20 * min(rates):  # launch-bound small sizes next to bandwidth-bound large ones
            ax.set_yscale("log")
        ax.set_title(" ".join(panel) + f" ({dtype})", fontsize=10)
        ax.set_xlabel("elements of x")
        ax.set_ylabel("GB/s (SPEC byte count)")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
