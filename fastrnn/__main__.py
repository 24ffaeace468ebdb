"""The ``fastrnn`` command: ``fastrnn info``, ``fastrnn sine``, ``fastrnn bench-report``, ``fastrnn --version``.

Each subcommand lives in its own module and registers itself through
``add_parser(subparsers)`` returning the parser, whose ``func`` default runs it.
The modules import with the core install alone; a subcommand that needs an
optional package says which ``pip install "fastrnn[...]"`` brings it when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from . import __version__
from ._optional import MissingExtraError

# subcommand name -> module with add_parser(subparsers)
SUBCOMMANDS = {
    "info": "fastrnn.tools.info",
    "sine": "fastrnn.training.sine_cli",
    "bench-report": "fastrnn.tools.bench_report",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``fastrnn`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="fastrnn", description="fast fused recurrent layers for CPUs")
    parser.add_argument("--version", action="version", version=f"fastrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, MissingExtraError) as exc:
        parser.exit(2, f"fastrnn {args.command}: error: {exc}\n")
    except BrokenPipeError:  # e.g. fastrnn info | head: the reader left, nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file named on the command line cannot be read or written
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        parser.exit(1, f"fastrnn {args.command}: error: {where}{exc.strerror or exc}\n")


if __name__ == "__main__":
    sys.exit(main())
