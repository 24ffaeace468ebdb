"""The ``fastrnn`` command: ``fastrnn info``, ``fastrnn sine``, ``fastrnn bench-report``.

Each subcommand lives in its own module and registers itself through
``add_parser(subparsers)`` returning the parser, whose ``func`` default runs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module with add_parser(subparsers)
SUBCOMMANDS = {
    "info": "fastrnn.info",
    "sine": "fastrnn.sine_cli",
    "bench-report": "fastrnn.bench_report",
}


def build_parser():
    parser = argparse.ArgumentParser(prog="fastrnn", description="fast fused recurrent layers for CPUs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue  # that part of fastrnn is not installed / not built yet
        mod.add_parser(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"fastrnn {args.command}: error: {exc}\n")
    except BrokenPipeError:  # e.g. fastrnn info | head: the reader left, nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a file named on the command line cannot be read or written
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        parser.exit(1, f"fastrnn {args.command}: error: {where}{exc.strerror or exc}\n")


if __name__ == "__main__":
    sys.exit(main())
