"""The ``nf-kernels`` command line (also ``python -m nf_kernels``): train, eval, sample, bench, demo.

    >>> from nf_kernels.cli import main
    >>> main(["train", "--batch-size", "-3"])  # doctest: +SKIP
    nf-kernels train: error: argument --batch-size: expected a positive integer, got -3 (see 'nf-kernels train --help')
    2

Every subcommand module has ``add_parser(subcommands)``, which registers its options and sets ``run_command``.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from . import bench, demo, evaluate, sample, train
from .errors import run_reporting_errors
from .parsing import HelpFormatter, Parser

PROG = "nf-kernels"
DESCRIPTION = """\
Fused kernels for normalizing-flow coupling layers, and the tools around them.

examples (start here):
  nf-kernels demo                         # RealNVP on 8x8 digits, samples, and a speed check (minutes, CPU)
  nf-kernels train --data moons           # a 2-D toy; then: nf-kernels eval runs/moons-realnvp
"""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(prog=PROG, description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (train, evaluate, sample, bench, demo):
        module.add_parser(subcommands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version and argument errors: argparse has already printed
        return int(exit.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    return run_reporting_errors(f"{PROG} {args.command}", lambda: args.run_command(args))
