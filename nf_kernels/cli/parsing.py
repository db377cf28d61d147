"""argparse, made to fail politely: one line naming the problem and where help is, exit status 2."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn

from .options import NotGiven


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line (no usage dump) pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in descriptions as written and shows each option's default, as ``[value]``.

    (argparse's ArgumentDefaultsHelpFormatter, in brackets.) A :class:`NotGiven` default, a setting that
    ``--resume`` may take from the checkpoint, shows the value it wraps. An option whose default is None (decided
    later, like ``--out``'s ``runs/<data>-<model>``) says what it will be in its help, ``[...]``, not ``[None]``.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default.value if isinstance(action.default, NotGiven) else action.default
        # By identity: 0 == False, and a default of 0 is worth showing.
        unset = default is None or default is False or default is argparse.SUPPRESS
        if unset or text.rstrip().endswith("]") or "%(default)" in text:
            return text
        return f"{text} [%(default)s]"


def _number(kind: Callable[[str], float], test: Callable[[float], bool], wanted: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    parse.__name__ = wanted  # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a positive number")
non_negative_float = _number(float, lambda v: v >= 0, "a number >= 0")


def say(message: str) -> None:
    """Progress and results for the user, on stdout."""
    print(message, file=sys.stdout, flush=True)


def warn(message: str) -> None:
    """Something the user may want to change, though the command goes on: on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
