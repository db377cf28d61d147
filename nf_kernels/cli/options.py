"""Command-line options as data: each :class:`Option` is declared once and becomes its argparse argument here.

A subcommand lists its options (``nf_kernels.cli.settings`` holds those of a training run) and calls
:func:`add_options`. For ``train --resume`` the parser must also tell "given" from "left at its default": a
setting that was not given comes from the checkpoint, and only then from its default. So on a ``resumable``
parser a saved setting's default is wrapped in :class:`NotGiven`, which the help still shows as the value and
:func:`given_settings` leaves out.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Iterable, Optional, Sequence


def flag(name: str) -> str:
    """The option of setting ``name``: ``data_seed`` is ``--data-seed``."""
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its name (the setting's key and argparse's ``dest``), help, parser and default.

    ``type=bool`` makes a flag (present: True). ``saved`` settings describe the run and are kept in its
    checkpoint; ``identity`` ones make it what it is, so ``--resume`` refuses a different value;
    ``config_field`` names the :class:`nf_kernels.training.TrainConfig` field the setting fills.
    """

    name: str
    help: str
    type: Callable[[str], Any] = str
    default: Any = None
    group: str = ""  # the section of --help
    choices: Optional[Sequence[str]] = None
    metavar: Optional[str] = None
    exclusive: str = ""  # options with the same non-empty key cannot be given together
    saved: bool = False
    identity: bool = False
    config_field: str = ""

    @property
    def flag(self) -> str:
        return flag(self.name)

    def but(self, **changes: Any) -> "Option":
        """This option with some attributes changed (another command's default or help, say)."""
        return dataclasses.replace(self, **changes)


class NotGiven:
    """The default of a setting on a resumable parser: --help shows ``value``, and it is known not to be typed."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:  # what --help's [%(default)s] shows
        return str(self.value)

    def __repr__(self) -> str:
        return f"NotGiven({self.value!r})"


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option], *, resumable: bool = False,
                grouped: bool = True) -> None:  # fmt: skip
    """Add ``options`` to ``parser`` in their order, each in its --help section unless not ``grouped``.

    With ``resumable``, saved settings default to :class:`NotGiven` (see :func:`given_settings`).
    """
    sections: dict[str, Any] = {}  # argument groups by --help section
    exclusive: dict[str, Any] = {}  # mutually exclusive groups by key
    for option in options:
        section: Any = parser
        if grouped and option.group:
            if option.group not in sections:
                sections[option.group] = parser.add_argument_group(option.group)
            section = sections[option.group]
        if option.exclusive:
            if option.exclusive not in exclusive:
                exclusive[option.exclusive] = section.add_mutually_exclusive_group()
            section = exclusive[option.exclusive]
        default = NotGiven(option.default) if resumable and option.saved else option.default
        if option.type is bool:
            section.add_argument(option.flag, action="store_true", default=default, help=option.help)
        else:
            section.add_argument(option.flag, type=option.type, default=default, choices=option.choices,
                                 metavar=option.metavar, help=option.help)  # fmt: skip


def given_settings(args: argparse.Namespace, options: Iterable[Option]) -> dict[str, Any]:
    """The saved settings among ``options`` that the command line gave (``args`` of a ``resumable`` parser)."""
    values = {option.name: getattr(args, option.name) for option in options if option.saved}
    return {name: value for name, value in values.items() if not isinstance(value, NotGiven)}
