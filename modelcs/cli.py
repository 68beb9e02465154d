"""The ``modelcs`` command line.

Each subcommand lives in the module that holds its logic and registers itself through a
``register(subparsers)`` function (listed in ``_COMMANDS``); that function adds a parser
and sets ``func`` to a callable ``func(args) -> int``.  Bad arguments give a one-line
error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand name -> module with a ``register(subparsers)`` function
_COMMANDS: dict[str, str] = {
    "demo": "modelcs.experiments.figure2",
    "rip": "modelcs.experiments.figure2",
    "coherence": "modelcs.experiments.coherence_tables",
    "phase": "modelcs.experiments.phase",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelcs",
        description="Compressive sensing with convolutions as linear operators.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered: set[str] = set()
    for modname in _COMMANDS.values():
        if modname in registered:
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith("modelcs"):
                continue  # subcommand not built yet
            raise
        mod.register(sub)
        registered.add(modname)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"modelcs {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
