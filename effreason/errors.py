"""Errors for people: a user's mistake ends in one or two lines that name the thing (path, Hub id, key)
and say what to do, with exit code 2; a bug keeps its traceback.

What counts as a user mistake (``is_user_error``):

- ``UserError``: effreason's own checks (``effreason.outputs.check_output_path``,
  ``effreason.models.check_model_source``);
- ``ValueError``: settings and data validation (``effreason.jsonl.DataError`` and ``UserError`` are
  ValueErrors, and so are the ``__post_init__`` checks of the config dataclasses, TRL's included);
- ``OSError``: paths and the network (not found, permission denied, a folder where a file belongs or
  the reverse, a full disk, a read-only file system, Hub downloads);
- ``yaml.YAMLError``: a config that is not valid YAML.

Anything else (``TypeError``, ``KeyError``, ``RuntimeError``, ...) is a bug and keeps its traceback.
``--debug`` (``effreason --debug ...``, ``python recipes/X.py --debug ...``) or ``EFFREASON_DEBUG=1``
shows the traceback of user mistakes too. Under ``accelerate launch`` only rank 0 prints the message
(config and path mistakes are the same on every rank); ``accelerate launch -q`` hides the launcher's
own traceback of the failed child.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

DEBUG_ENV = "EFFREASON_DEBUG"
#: exit status of a user mistake (argparse's, for a bad command line)
EXIT_USER_ERROR = 2

_OS_HINTS = {
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied: check its permissions or choose another path",
    errno.EPERM: "operation not permitted: check its permissions or choose another path",
    errno.EISDIR: "is a folder; give a file",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.ENOSPC: "no space left on the device: free some, or choose another path",
    errno.EROFS: "read-only file system: choose another path",
    errno.EEXIST: "already exists",
}


class UserError(ValueError):
    """A mistake in what the user gave (a path, an id, a setting); the message says what to do."""


def debug_enabled() -> bool:
    """True when ``EFFREASON_DEBUG`` is set to anything but ``""`` / ``0``."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a user mistake (see the module docstring) rather than a bug."""
    if isinstance(exc, (ValueError, OSError)):
        return True
    yaml = sys.modules.get("yaml")
    return yaml is not None and isinstance(exc, yaml.YAMLError)


def _os_message(exc: OSError) -> str | None:
    """``<path>: <what it means>`` for an OSError about one path, else None."""
    if exc.filename is None or exc.errno is None:
        return None
    path = os.fsdecode(exc.filename)
    if exc.errno == errno.ENOTDIR:
        blocker = next((p for p in Path(path).parents if p.is_file()), None)
        if blocker is not None:
            return f"{path}: {blocker} is a file, not a folder; choose another path"
    hint = _OS_HINTS.get(exc.errno, exc.strerror or "")
    return f"{path}: {hint}"


def describe(exc: BaseException) -> str:
    """The message of a user mistake, at most two lines."""
    text = (_os_message(exc) if isinstance(exc, OSError) else None) or str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 2:  # third-party messages: keep every word, in two lines
        lines = [lines[0], " ".join(lines[1:])]
    return "\n".join(lines)


def _is_main_rank() -> bool:
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("", "0")


def report_user_error(exc: BaseException, prog: str, debug: bool = False) -> bool:
    """Print ``<prog>: error: <message>`` for a user mistake and return True; return False (print nothing)
    for a bug, or with ``debug`` / ``EFFREASON_DEBUG=1``: the caller re-raises it."""
    if debug or debug_enabled() or not is_user_error(exc):
        return False
    if _is_main_rank():
        print(f"{prog}: error: {describe(exc)}", file=sys.stderr)
    return True


@contextmanager
def user_errors(prog: str, debug: bool = False):
    """Turn a user mistake raised inside the block into its message on stderr and ``SystemExit(2)``;
    bugs (and everything with ``debug`` or ``EFFREASON_DEBUG=1``) propagate with their traceback."""
    try:
        yield
    except Exception as e:
        if not report_user_error(e, prog, debug):
            raise
        raise SystemExit(EXIT_USER_ERROR) from None


def run_script(main: Callable[[list[str]], int], prog: str, argv: Sequence[str] | None = None) -> int:
    """Run a recipe's ``main(argv)`` under ``user_errors``; a ``--debug`` flag anywhere in ``argv`` is
    taken out and shows tracebacks. Use as ``sys.exit(run_script(main, "recipes/x.py"))``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    with user_errors(prog, debug=debug):
        return main([a for a in argv if a != "--debug"])
