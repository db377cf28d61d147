"""Checkpoints that survive crashes and cannot be damaged unnoticed.

A checkpoint is one header line, ``nf_kernels.checkpoint/2 sha256=<hex> bytes=<n>``, then the ``torch.save``
bytes of the payload. It is written atomically (:func:`nf_kernels.training.files.write_atomically`), so a crash
leaves the previous checkpoint, and every load checks the SHA-256: a file changed after it was written (a bad
disk, a truncated copy) is refused with :class:`CheckpointError` instead of loading wrong weights.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .files import write_atomically

FORMAT = "nf_kernels.checkpoint/2"
_HEADER = re.compile(rb"sha256=([0-9a-f]{64}) bytes=([0-9]+)\n")


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable, damaged, or does not fit what it is loaded into."""


def save_atomically(payload: dict[str, Any], path: Path) -> None:
    """``torch.save(payload, path)`` with a checksum, all or nothing."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    body = buffer.getbuffer()
    header = f"{FORMAT} sha256={hashlib.sha256(body).hexdigest()} bytes={len(body)}\n".encode()
    write_atomically(path, header, body)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The payload saved by :func:`save_atomically`; :class:`CheckpointError` with the reason otherwise."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        content = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    body = _verified_body(content, path)
    try:
        # weights_only=False: checkpoints hold RNG states and plain config dicts. The SHA-256 detects damage, not
        # who wrote the file: like any pickle, load only checkpoints from a source you trust.
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an nf_kernels checkpoint (expected format {FORMAT!r})")
    return payload


def _verified_body(content: bytes, path: Path) -> memoryview:
    """The payload bytes after the header, once their length and SHA-256 match what the header says."""
    prefix = FORMAT.encode() + b" "
    if not content.startswith(prefix):
        raise CheckpointError(f"{path} is not an nf_kernels checkpoint (no {FORMAT!r} header: written by torch.save, "
                              f"by an older nf_kernels, or not a checkpoint at all)")  # fmt: skip
    header = _HEADER.match(content, len(prefix))
    if header is None:
        raise CheckpointError(f"{path} is damaged: its header line is unreadable")
    body = memoryview(content)[header.end():]
    digest, size = header.group(1).decode(), int(header.group(2))
    if len(body) != size:
        raise CheckpointError(f"{path} is damaged: it holds {len(body)} bytes of data where {size} were written "
                              f"(a truncated or partial copy?)")  # fmt: skip
    if hashlib.sha256(body).hexdigest() != digest:
        raise CheckpointError(f"{path} is damaged: its contents changed after it was written (SHA-256 mismatch); "
                              f"restore it from a copy or train again")  # fmt: skip
    return body


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
