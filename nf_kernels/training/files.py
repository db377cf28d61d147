"""Output files that survive crashes: written beside their target, synced, then renamed over it.

``os.replace`` is atomic on POSIX and Windows, so a reader sees either the previous file or the new one, never a
half-written one, whatever happens during the write (a crash, a full disk, a kill). A kill can still leave the
temporary ``.<name>.<random>.partial`` file behind: :func:`remove_partial_files` clears those.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator

PARTIAL_SUFFIX = ".partial"


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Re-raise an OSError that does not say which file it is about (a full disk in ``write``) with ``path`` in it."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, str(path)) from None


def write_atomically(path: Path, *parts: bytes) -> None:
    """Replace the contents of ``path`` with ``parts``, concatenated: all or nothing.

    The file gets the permissions any new file gets (the umask decides), like every other output of a run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path):
        temporary, handle = _create_partial(path)
        try:
            with os.fdopen(handle, "wb") as file:
                for part in parts:
                    file.write(part)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_directory(path.parent)


def remove_partial_files(path: Path) -> list[Path]:
    """Delete what killed writes of ``path`` left behind; only safe while nothing else writes ``path``."""
    stale = sorted(path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def _create_partial(path: Path) -> tuple[Path, int]:
    # Not tempfile.mkstemp: it creates files with mode 0600 whatever the umask.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:
            continue


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); where directories cannot be opened (Windows), there is nothing to do."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
