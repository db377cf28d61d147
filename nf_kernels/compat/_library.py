"""Importing a peer library for its compat module, with the install hint when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = "pip install --no-deps -r requirements-compat.txt"


def require(name: str) -> ModuleType:
    """The peer library `name` (an import name), or an ImportError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"nf_kernels.compat needs {name!r} for this module and could not import it ({error}); install the "
            f"pinned peer libraries with: {INSTALL_HINT}"
        ) from error
