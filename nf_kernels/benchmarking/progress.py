"""A tqdm progress bar when tqdm is installed and wanted, else a silent stand-in with the same two methods."""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, description: str, enabled: bool = True) -> Any:
    """A bar on stderr with `total` steps; `enabled=False`, or no tqdm, gives one that prints nothing."""
    if not enabled:
        return _Silent()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _Silent()
    return tqdm(total=total, desc=description, file=sys.stderr, dynamic_ncols=True)
