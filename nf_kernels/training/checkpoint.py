"""Checkpoints that survive crashes: written to a temporary file, synced, then renamed over the old one.

``os.replace`` is atomic on POSIX and Windows, so a reader sees either the previous checkpoint or the new one,
never a half-written file, whatever happens during the write (a crash, a full disk, a kill).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "nf_kernels.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit what it is loaded into."""


def save_atomically(payload: dict[str, Any], path: Path) -> None:
    """``torch.save(payload, path)``, all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save({"format": FORMAT, **payload}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The payload saved by :func:`save_atomically`; :class:`CheckpointError` with the reason otherwise."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # weights_only=False: checkpoints hold RNG states and plain config dicts, and are our own files.
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nf_kernels checkpoint (expected format {FORMAT!r})")
    return payload


def capture_rng() -> dict[str, Any]:
    """Every global random state a training step could touch."""
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
