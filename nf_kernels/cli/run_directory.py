"""One run per directory: ``nf-kernels train`` holds an exclusive lock on ``--out``, and ``--overwrite`` is atomic.

The lock is ``fcntl.flock`` on ``<out>/.lock``, taken before anything in the directory is read or written and
held to the end of the run; the operating system drops it when the process ends, even by ``kill -9``, so a crash
never leaves a directory locked. The file holds the pid of its holder, for the message a second run gets.

``--overwrite`` moves the old directory aside in one rename, locks a fresh directory for the new run, and only then
deletes the old one. Killed in between, ``--out`` is left empty with the old run beside it; the next claim of
``--out`` finds it empty and moves the old run back. So ``--out`` never mixes two runs, and an old run is only
deleted once a new one holds the directory.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not protected from sharing a directory
    fcntl = None

from ..errors import UserError
from .errors import UsageError

LOCK_NAME = ".lock"
# What `nf-kernels train` and `nf-kernels sample` write into a run directory: all that --overwrite may delete.
RUN_OUTPUTS = ("checkpoint.pt", "metrics.jsonl", "curves.png", "samples.png", "density.png", "samples-*.png",
               ".*.partial", LOCK_NAME)  # fmt: skip
_ASIDE = ".{name}.overwritten-"  # the old run's name while it is being deleted, beside the run directory


class RunInUse(UserError, RuntimeError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def claim_run_directory(out: Path, *, overwrite: bool = False) -> Iterator[None]:
    """Hold ``out`` exclusively (creating it) for the ``with`` block; with ``overwrite``, empty it first.

    A directory this call created is removed again if the block leaves nothing in it but the lock file.
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; it must name a directory (the run's outputs go in it)")
    if out.is_symlink() and not out.exists():
        raise UsageError(f"--out {out} is a symbolic link to {os.readlink(out)}, which does not exist")
    created = not out.exists()
    lock = _lock(out)
    try:
        _settle_leftover_asides(out)
        if overwrite and _previous_outputs(out):
            aside = _move_aside(out)  # the old lock goes along, still held, until the fresh directory is locked
            # Only once the fresh directory is ours is the old run deleted: if another run locked it first, the
            # old run stays beside it (and is restored into it by the next claim that finds it empty).
            fresh = _lock(out)
            shutil.rmtree(aside, ignore_errors=True)
            os.close(lock)
            lock = fresh
        yield
    finally:
        with contextlib.suppress(OSError):
            if created and [p.name for p in out.iterdir()] == [LOCK_NAME]:  # e.g. a mistyped --out with --resume
                (out / LOCK_NAME).unlink()
                out.rmdir()
        os.close(lock)


def _lock(directory: Path) -> int:
    """An open descriptor of ``directory/.lock``, exclusively locked (:class:`RunInUse` if someone else has it)."""
    path = directory / LOCK_NAME
    while True:
        directory.mkdir(parents=True, exist_ok=True)
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            return handle
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise RunInUse(f"{directory} is in use by another training run (pid {holder}): wait for it to finish, "
                           f"stop it, or choose another --out") from None  # fmt: skip
        except BaseException:
            os.close(handle)
            raise
        # Between open and flock, an --overwrite elsewhere may have moved this file away with its directory.
        try:
            same = os.path.samestat(os.fstat(handle), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(handle, 0)
            os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
            return handle
        os.close(handle)


def _previous_outputs(out: Path) -> list[Path]:
    """What is in ``out`` besides the lock; a refusal if any of it is not a run output (never delete a user's files)."""
    entries = sorted(p for p in out.iterdir() if p.name != LOCK_NAME)
    foreign = [p.name for p in entries if p.is_dir() or not any(fnmatch.fnmatch(p.name, g) for g in RUN_OUTPUTS)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UsageError(f"--overwrite would delete {out}, but it holds files that are not training outputs "
                         f"({shown}): move them elsewhere or choose another --out")  # fmt: skip
    return entries


def _move_aside(out: Path) -> Path:
    """Rename the old run out of the way, in one atomic step; its new path (to delete)."""
    real = out.resolve()
    here = Path.cwd().resolve()
    if real in (here, *here.parents):
        raise UsageError(f"--overwrite cannot replace {out}: it is (or holds) the current directory; "
                         f"run from elsewhere")
    aside = real.with_name(_ASIDE.format(name=real.name) + secrets.token_hex(4))
    real.rename(aside)
    real.mkdir()  # where a symlinked --out points
    return aside


def _settle_leftover_asides(out: Path) -> None:
    """Old runs an --overwrite set aside and did not get to delete (it was killed, or lost the fresh directory to
    another run). Safe: only the lock holder creates, restores or deletes them. If ``out`` holds no run output,
    the new run never started: the newest old run is moved back into ``out``. The others are deleted.
    """
    real = out.resolve()
    leftovers = sorted(real.parent.glob(_ASIDE.format(name=glob.escape(real.name)) + "*"), key=os.path.getmtime)
    if leftovers and all(p.name == LOCK_NAME for p in out.iterdir()):
        kept = leftovers.pop()
        for entry in kept.iterdir():
            if entry.name != LOCK_NAME:
                entry.rename(real / entry.name)
        leftovers.append(kept)
    for leftover in leftovers:
        shutil.rmtree(leftover, ignore_errors=True)


