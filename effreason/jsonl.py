"""JSONL reading and writing with errors that name the file, line and field, and atomic writes
(files and folders)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data. The message names the file, the line (1-based) and the field."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str, field: str | None = None):
        where = str(path) if line is None else f"{path}:{line}"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field = str(path), line, field


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, row)`` for each non-blank line; raise ``DataError`` on a missing file, a folder,
    text that is not UTF-8 or bad JSON."""
    path = Path(path)
    if path.is_dir():
        raise DataError(path, None, "is a folder; give a JSONL file")
    if not path.is_file():
        raise DataError(path, None, "file not found")
    lineno = 0
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    # the column within the line (JSON's own counts the line's newline as a second line)
                    column = min(e.pos, len(line.rstrip("\r\n"))) + 1
                    raise DataError(path, lineno, f"invalid JSON ({e.msg} at column {column})") from None
                if not isinstance(row, dict):
                    raise DataError(path, lineno, f"expected a JSON object, got {type(row).__name__}")
                yield lineno, row
    except UnicodeDecodeError:  # decoded by blocks, so the error does not know its line: find it
        raise _not_utf8(path, lineno) from None


def _not_utf8(path: Path, after_line: int) -> DataError:
    """The ``DataError`` for the first line after ``after_line`` that is not UTF-8."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno <= after_line:
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return DataError(path, lineno, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of "
                                 "the line); save the file as UTF-8")
    return DataError(path, None, "not UTF-8 text; save the file as UTF-8")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a whole JSONL file (see ``iter_jsonl``)."""
    return [row for _, row in iter_jsonl(path)]


def require(row: dict, field: str, path: str | os.PathLike, line: int, types: type | tuple = object) -> Any:
    """Return ``row[field]``, raising ``DataError`` if it is missing, null or of the wrong type."""
    if field not in row or row[field] is None:
        present = ", ".join(sorted(row)) or "none"
        raise DataError(path, line, f"missing (fields present: {present})", field=field)
    value = row[field]
    if not isinstance(value, types):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise DataError(path, line, f"expected {names}, got {type(value).__name__}", field=field)
    return value


def _user_mode(default: int) -> int:
    """``default`` less the umask: the mode ``open`` / ``mkdir`` give (``mkstemp`` / ``mkdtemp`` give 0600 / 0700)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return default & ~mask


_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(path: Path) -> str:
    """Temporary files and folders for ``path`` are ``.<name>.tmp-<host>-<pid>-<random>``, so a later run can
    tell the leftovers of a killed writer (same host, process gone) from a live writer's."""
    return f".{path.name}.tmp-{_HOST_TAG}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files / folders a killed atomic write of ``path`` left behind; return them."""
    path = Path(path)
    head = f".{path.name}.tmp-{_HOST_TAG}-"
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        pid = name[len(head):].split("-", 1)[0] if name.startswith(head) else ""
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        leftover = path.parent / name
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        logger.info("removed %s, left by an interrupted write", leftover)
        removed.append(leftover)
    return removed


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file next to ``path`` and rename it over ``path`` only on success (with the usual
    mode, ``0666 & ~umask``); temporary files a killed write left are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.chmod(tmp, _user_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = False):
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (so ``path`` is
    either complete or what was there before), on failure it is removed.

    ``path`` must be missing or empty unless ``replace`` (the caller checked it holds its own earlier
    output): a folder of someone else's files is never removed.

    Raises:
        FileExistsError: ``path`` is a file, or a non-empty folder and not ``replace`` (checked first).
    """
    from effreason.outputs import refuse_unowned_directory

    path = Path(path)
    refuse_unowned_directory(path, replace, "this command")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _user_mode(0o777))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write rows atomically (the file is either complete or untouched)."""
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write one JSON document atomically, indented."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def read_append_log(path: str | os.PathLike, check: Callable[[dict], object] | None = None) -> tuple[list[dict], bool]:
    """Rows of an append-only JSONL log (``AppendLog``), for resuming the run that wrote it.

    Every write ends its rows with a newline, so a run killed mid-write leaves at most one torn line:
    the last, unterminated one (even if it happens to parse). It is dropped with a warning and cut from
    the file, so the next append starts on a fresh line. Any other unreadable line, or a row that
    ``check`` rejects (``KeyError`` / ``TypeError`` / ``ValueError``: a missing key field, say), is a
    ``DataError`` naming the file and line: a resume never silently drops rows.

    Returns:
        ``(rows, torn)``; ``([], False)`` when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        return [], False
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = bool(lines[-1].strip())
    rows = []
    for i, line in enumerate(lines[:-1] if torn else lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            if check is not None:
                check(row)
        except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise DataError(path, i + 1, f"unreadable row ({e}); this file was not written by this command, "
                            "or was edited: fix or delete it") from None
        rows.append(row)
    if torn:
        logger.warning("%s:%d: dropping a torn last line (an interrupted write)", path, len(lines))
        with path.open("r+b") as f:
            f.truncate(len(data) - len(lines[-1]))
    return rows, torn


class AppendLog:
    """Appends rows to a JSONL log, one write, flush and fsync per batch of rows.

    One write call per batch means a kill leaves at most one torn line, which ``read_append_log``
    drops; everything before it is kept.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, rows: Iterable[dict]) -> None:
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
