"""The ``modelcs`` command line.

Each subcommand lives in the module that holds its logic, in a ``register(subparsers)``
function that adds its parser and sets ``func`` to a callable ``func(args) -> int``.  The
modules are imported explicitly below and listed in :data:`SUBCOMMANDS`: a broken import
fails loudly instead of making a subcommand vanish from ``--help``.

To add a subcommand: write ``register(subparsers)`` next to its logic (use the option
helpers of :mod:`modelcs._cli`), import its module here and append its ``register`` to
:data:`SUBCOMMANDS`.

Errors: a mistake in the user's input (see :func:`modelcs._cli.is_user_error`) is one line
on stderr and exit status 2, never a traceback; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import __version__
from ._cli import is_user_error, one_line_errors
from .experiments import coherence_tables, figure2, phase, vgg16

#: The ``register(subparsers)`` function of every subcommand, in ``--help`` order.
SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (
    figure2.register,  # demo, rip
    coherence_tables.register,  # coherence
    phase.register,  # phase
    vgg16.register,  # vgg16
)


def build_parser() -> argparse.ArgumentParser:
    """The ``modelcs`` parser with every subcommand of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="modelcs",
        description="Compressive sensing with convolutions as linear operators.",
    )
    parser.add_argument("--version", action="version", version=f"modelcs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(sub)
    one_line_errors(parser, "modelcs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``modelcs`` with ``argv``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"modelcs {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
