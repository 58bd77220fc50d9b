"""The ``effreason`` command line: one entry point, one subcommand per tool.

Each subcommand lives in its own module and registers itself with ``add_parser(subparsers)``;
the module is imported only when listed here, and heavy imports happen inside its ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> module that defines ``add_parser(subparsers)`` (which sets ``func`` on its parser).
SUBCOMMANDS = {
    "lab": "effreason.lab.cli",
    "eval": "effreason.evaluation.cli",
    "prune": "effreason.pruning.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effreason", description="Train and measure efficient-reasoning language models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:  # input errors: one clear line, no traceback
        if args.verbose:
            raise
        print(f"effreason {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
