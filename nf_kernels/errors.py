"""The one base class of the errors a user causes and can fix, as opposed to bugs.

Every such error of the data sets, the trainer and the command line derives from :class:`UserError` (and also
from the builtin its callers expect, usually ``ValueError`` or ``RuntimeError``). ``nf-kernels`` prints these as
one line; any other exception is a bug, and keeps its traceback.

    >>> from nf_kernels.data import DataError
    >>> issubclass(DataError, UserError), issubclass(DataError, ValueError)
    (True, True)
"""

from __future__ import annotations


class UserError(Exception):
    """Something about the user's input, files or machine that stops the work; the message says what to change."""
