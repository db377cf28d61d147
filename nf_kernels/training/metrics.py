"""Metrics as JSON lines: one object per log step, easy to ``tail -f``, ``jq`` or load with pandas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..errors import UserError
from .files import naming, write_atomically


class MetricsError(UserError, ValueError):
    """A metrics file with a line that is not a JSON record (other than a torn last line, which is dropped)."""


class MetricsLog:
    """Appends one JSON object per :meth:`write` to ``path``; a disabled log (ranks other than 0) does nothing.

    A fresh log starts an empty file. On resume, lines past the checkpoint's step are dropped, and so is a torn
    last line (a write cut short by a kill or a full disk), so the file reads as one uninterrupted run.

    >>> import tempfile; log = MetricsLog(Path(tempfile.mkdtemp()) / "metrics.jsonl")
    >>> log.write({"step": 1, "loss": 0.5}); log.records()
    [{'step': 1, 'loss': 0.5}]
    """

    def __init__(self, path: Path, *, enabled: bool = True, resume_step: Optional[int] = None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        kept = [r for r in self.records() if r.get("step", 0) <= resume_step] if resume_step is not None else []
        # Rewritten whole and atomically: a kill now must not lose the lines up to the checkpoint.
        write_atomically(path, "".join(json.dumps(record) + "\n" for record in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with naming(self.path), self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")  # json writes floats with repr: they read back exactly

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def __repr__(self) -> str:
        return f"MetricsLog({str(self.path)!r}, enabled={self.enabled})"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file, oldest first ([] if there is none yet).

    An unterminated last line that does not parse is a write cut short, and is left out; any other line that is
    not a JSON object is a :class:`MetricsError` naming the file and the line.
    """
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")  # the last item is b"" when the file ends with a newline
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError for binary garbage
            if number == len(lines):
                break
            reason = getattr(error, "msg", None) or type(error).__name__
            raise MetricsError(f"{path}, line {number}: not a JSON record ({reason}); fix or delete that line"
                               ) from None
        if not isinstance(record, dict):
            raise MetricsError(f"{path}, line {number}: expected a JSON object, found {type(record).__name__}")
        records.append(record)
    return records
