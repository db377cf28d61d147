"""Turning expected failures (bad input, a missing file, an unusable backend) into one clear line, no traceback."""

from __future__ import annotations

import os
import sys
from typing import Callable

from ..data import DataError
from ..training import CheckpointError, TrainingDiverged

DEBUG_VARIABLE = "NF_KERNELS_DEBUG"  # set to 1 to see the full traceback of an error the CLI would summarize


class UsageError(ValueError):
    """A combination of options that cannot work; the message says what to change."""


# What a user can cause: shown as a message. Anything else is a bug, and keeps its traceback.
EXPECTED_ERRORS = (UsageError, DataError, CheckpointError, TrainingDiverged, ValueError, TypeError, OSError, RuntimeError)


def run_reporting_errors(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; on an expected error print ``prog: error: message`` and return a non-zero status."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as error:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        message = str(error).strip() or type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
