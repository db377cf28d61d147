"""The bandwidth plot: achieved GB/s against size, one line per provider, with the copy bandwidth drawn in.

The copy bandwidth is the ceiling of a memory-bound op's GB/s (its floor time is bytes / copy bandwidth), so a
provider's line touching it means the op runs as fast as memory allows. Sizes that fit in the last-level cache
are drawn as hollow points: they can pass the ceiling without saying anything about memory. One panel per
(op, direction, mask), one figure per dtype.
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
            points = sorted((r.case.numel, r.gbps, r.in_cache) for r in rows if r.provider == provider
                            and (r.case.op, r.case.direction, r.case.mask) == panel)  # fmt: skip
            if points:
                sizes, speeds, _ = zip(*points)
                (line,) = ax.plot(sizes, speeds, marker="o", label=provider)
                hollow = [(size, speed) for size, speed, cached in points if cached]
                if hollow:
                    ax.plot(*zip(*hollow), linestyle="none", marker="o", markerfacecolor="white",
                            markeredgecolor=line.get_color())  # fmt: skip
        ax.axhline(copy_bytes_per_s / 1e9, color="black", linestyle="--", label="copy bandwidth (ceiling)")
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
    if any(r.in_cache for r in rows):  # the legend (first panel only) explains the hollow points
        axes.flat[0].plot([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="black",
                          label="fits in cache")  # fmt: skip
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
