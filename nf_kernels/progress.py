"""The progress bar of training and of the benchmarks: tqdm when it is installed and wanted, else a silent stand-in.

tqdm is optional at run time (a bare GPU machine may lack it): without it, or with ``enabled=False``, the bar
draws nothing, and only :meth:`ProgressBar.write` lines still print. Redirected to a file or a CI log, the bar
redraws every few seconds rather than many times a second.

    >>> bar = progress_bar(3, "demo", enabled=False)
    >>> bar.update(); bar.set_postfix_str("loss=0.5"); bar.write("step 1: done"); bar.close()
    step 1: done
"""

from __future__ import annotations

import sys
from typing import Protocol

TERMINAL_REDRAW_S = 0.1  # tqdm's own default
REDIRECTED_REDRAW_S = 5.0  # a log file gets a line every 5 s, not ten a second


class ProgressBar(Protocol):
    """What the callers use of a tqdm bar; :func:`progress_bar` returns a tqdm bar or a stand-in with these."""

    def update(self, n: int = 1) -> object: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...

    def write(self, s: str) -> None: ...

    def close(self) -> None: ...


class _SilentBar:
    """A bar that draws nothing; its :meth:`write` prints, as ``tqdm.write`` does (on stdout)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, flush=True)

    def close(self) -> None:
        pass


def progress_bar(total: int, description: str, enabled: bool = True, *, initial: int = 0,
                 unit: str = "it") -> ProgressBar:  # fmt: skip
    """A bar on stderr counting ``initial`` to ``total`` ``unit``; silent when not ``enabled`` or without tqdm."""
    if not enabled:
        return _SilentBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _SilentBar()
    redraw = TERMINAL_REDRAW_S if sys.stderr.isatty() else REDIRECTED_REDRAW_S
    return tqdm(total=total, initial=initial, desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True,
                mininterval=redraw)  # fmt: skip
