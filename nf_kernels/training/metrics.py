"""Metrics as JSON lines: one object per log step, easy to ``tail -f``, ``jq`` or load with pandas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


class MetricsLog:
    """Appends one JSON object per :meth:`write` to ``path``; a disabled log (ranks other than 0) does nothing.

    On resume, lines past the checkpoint's step are dropped, so the file reads as one uninterrupted run.

    >>> import tempfile; log = MetricsLog(Path(tempfile.mkdtemp()) / "metrics.jsonl")
    >>> log.write({"step": 1, "loss": 0.5}); log.records()
    [{'step': 1, 'loss': 0.5}]
    """

    def __init__(self, path: Path, *, enabled: bool = True, resume_step: Optional[int] = None) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in self.records() if r.get("step", 0) <= resume_step] if resume_step is not None else []
        path.write_text("".join(json.dumps(record) + "\n" for record in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")  # json writes floats with repr: they read back exactly

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def __repr__(self) -> str:
        return f"MetricsLog({str(self.path)!r}, enabled={self.enabled})"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics file, oldest first ([] if there is none yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
