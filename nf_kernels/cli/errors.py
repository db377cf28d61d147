"""Which failures the command line reports as one clear line, and which keep their traceback (bugs).

One line: a :class:`nf_kernels.errors.UserError` (bad options, data, checkpoints, devices, missing optional
packages...) and what the machine refuses (a full disk, a permission, GPU memory). Anything else is a bug in
nf_kernels: it propagates with its full traceback, whatever its type (a ``ValueError`` from deep inside included).
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import torch

from ..errors import UserError

DEBUG_VARIABLE = "NF_KERNELS_DEBUG"  # set to 1 to see the full traceback of an error the CLI would summarize


class UsageError(UserError, ValueError):
    """A combination of options that cannot work; the message says what to change."""


# Neither the user's mistake nor a bug: the fix is on the machine, and the message names the file or the size.
MACHINE_ERRORS = (OSError, torch.OutOfMemoryError)


def run_reporting_errors(prog: str, command: Callable[[], int]) -> int:
    """Run ``command``; on a user's or the machine's error print ``prog: error: message`` and return 1."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (UserError, *MACHINE_ERRORS) as error:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        message = str(error).strip() or type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
