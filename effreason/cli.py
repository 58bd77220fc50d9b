"""The ``effreason`` command line: one entry point, one subcommand per tool.

Each subcommand lives in its own module and registers itself with ``add_parser(subparsers)``;
the module is imported only when listed here, and heavy imports happen inside its ``run``.

A user mistake ends in one or two lines and exit code 2, a bug in a traceback; ``--debug`` (anywhere
on the command line) or ``EFFREASON_DEBUG=1`` shows the traceback of mistakes too (``effreason.errors``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from effreason.errors import EXIT_USER_ERROR, report_user_error

# name -> module that defines ``add_parser(subparsers)`` (which sets ``func`` on its parser).
SUBCOMMANDS = {
    "lab": "effreason.lab.cli",
    "eval": "effreason.evaluation.cli",
    "prune": "effreason.pruning.cli",
}


class _Parser(argparse.ArgumentParser):
    """argparse's ``error`` prints the whole usage (dozens of lines for ``eval``) before the message;
    print the message and where to find the options. Sub-command parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists the options)\n")


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on ``parser`` and every sub-command (SUPPRESS: a sub-command's default must not reset it)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error (or set EFFREASON_DEBUG=1)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_debug(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="effreason", description="Train and measure efficient-reasoning language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(subparsers)
    _add_debug(parser)
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
    except Exception as e:
        if not report_user_error(e, f"effreason {args.command}", debug=getattr(args, "debug", False) or args.verbose):
            raise
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
