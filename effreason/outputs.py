"""Outputs a command owns: a manifest that marks them as ours and holds what a resume must match, a
lock so one run at a time writes them, and the fingerprints (weights, input files) a manifest holds.

Every command that writes where the user points it follows the same rules:

- it writes over nothing it did not write: an output whose manifest is missing or not ours is refused
  and left untouched, ``--overwrite`` or not (``OutputExistsError``); no input is also an output;
- it resumes only from its own output made with the same fingerprint (settings, weights, input):
  ``ConfigMismatchError`` names each key that differs, old -> new; a manifest with no rows beside it
  (a run that failed before writing any, e.g. while loading its model) is replaced, not a reason to refuse;
- one run at a time per output (``output_lock``): a second run refuses, naming the holder's PID and host.

Eval keeps its manifest as ``config.json`` in its output folder, prune as ``<output>.config.json``.
``check_output_path`` / ``check_input_file`` run first, before anything heavy is loaded: a path that
cannot be written or read is named at once (``UserError``), not after a model load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from effreason.errors import UserError
from effreason.jsonl import write_json

logger = logging.getLogger(__name__)

#: Bytes hashed at each end of a weight file (hashing multi-GB checkpoints in full would cost more than a small run).
EDGE_BYTES = 1 << 20
#: Files of a model / adapter / dataset folder that ``files_fingerprint`` hashes.
FINGERPRINT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".arrow", ".parquet")


class ConfigMismatchError(ValueError):
    """The output holds a run made with other settings, weights or inputs; ``differences`` maps each
    differing key to ``(saved, now)``."""

    def __init__(self, out: str | os.PathLike, differences: Mapping[str, tuple[object, object]],
                 hint: str = "use a new --output, or --overwrite to discard the old run"):
        items = list(differences.items())
        details = "; ".join(f"{k}: {_change(saved, now)}" for k, (saved, now) in items[:4])
        details += f"; and {len(items) - 4} more" if len(items) > 4 else ""
        super().__init__(f"{out} holds a run that differs from this one ({details}); {hint}")
        self.out_dir, self.differences = Path(out), dict(differences)


class OutputExistsError(FileExistsError, ValueError):
    """An output path holds something this command did not write (or is an input)."""


class OutputInUseError(ValueError):
    """Another live run holds the output's lock."""


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _change(saved: object, now: object) -> str:
    """``saved -> now``, long strings shown from a little before where they first differ."""
    if isinstance(saved, str) and isinstance(now, str):
        same = len(os.path.commonprefix([saved, now]))
        if same > 20:
            return f"...{_short(saved[same - 10:])} -> ...{_short(now[same - 10:])}"
    return f"{_short(saved)} -> {_short(now)}"


def _jsonable(value: object) -> object:
    """The value as it reads back from JSON (tuples become lists, int dict keys become strings)."""
    return json.loads(json.dumps(value, default=str))


def differences(saved: Mapping, now: Mapping) -> dict[str, tuple[object, object]]:
    """``{key: (saved, now)}`` for every key whose values differ (``now`` compared as it reads back from JSON);
    where both values are mappings, their differing keys are listed instead (``methods.early_exit.delta``)."""
    now = _jsonable(now)
    out = {}
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.update({f"{k}.{sub}": change for sub, change in differences(a, b).items()})
        else:
            out[k] = (a, b)
    return out


# --- inputs and outputs ------------------------------------------------------------------------------------


def refuse_input_as_output(inputs: Mapping[str, object], outputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise ``OutputExistsError`` if an input is one of the outputs, or inside an output folder.

    Args:
        inputs: ``{flag: path}`` (``None`` values and Hub ids are harmless).
        outputs: files and folders the command writes; paths are compared resolved (symlinks, ``..``).
    """
    ins = {label: Path(os.fspath(p)).resolve() for label, p in inputs.items() if isinstance(p, (str, os.PathLike))}
    for out in outputs:
        if out is None:
            continue
        target = Path(os.fspath(out)).resolve()
        for label, src in ins.items():
            if src == target:
                raise OutputExistsError(f"{label} {inputs[label]} is also the output {out} (after resolving links "
                                        "and relative paths): choose another output; nothing was written")
            if target in src.parents:
                raise OutputExistsError(f"{label} {inputs[label]} lies inside the output folder {out}, which is "
                                        "replaced: choose another output; nothing was written")


def refuse_unowned_directory(path: str | os.PathLike, owned: bool, what: str) -> None:
    """Raise ``OutputExistsError`` unless ``path`` is missing, an empty folder, or (``owned``) ours to replace."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a folder: choose another path for {what}")
    if not owned and any(path.iterdir()):
        raise OutputExistsError(f"{path} is not empty and was not written by {what}: choose another path, "
                                "or move its contents away")


def _read_manifest(manifest: Path, command: str) -> dict | None:
    """The manifest's contents if it is ours (``written_by`` = ``command``, or an eval config.json from before
    manifests were marked), else ``None``."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), dict):
        return None
    legacy = "written_by" not in data and command == "effreason eval" and isinstance(data.get("config"), dict)
    return data if data.get("written_by") == command or legacy else None


def claim_output(manifest: str | os.PathLike, rows: str | os.PathLike, files: Sequence[str | os.PathLike],
                 fingerprint: Mapping, *, command: str, overwrite: bool = False, config: Mapping | None = None,
                 hint: str | None = None, write: bool = True) -> bool:
    """Make an output ready for a run with ``fingerprint``, or refuse (see the module docstring).

    Args:
        manifest: the file that marks the output as ``command``'s and holds the fingerprint.
        rows: the output's row log; a manifest with an empty or missing log has no run to protect.
        files: every other file the command writes there (removed by ``overwrite`` with ``rows``).
        fingerprint: what a resume must match; ``config``: saved beside it for people.
        write: False only checks (nothing is created or removed).

    Returns:
        True when the output holds rows of the same run to resume.

    Raises:
        OutputExistsError: an output file exists without our manifest, or the manifest is not ours.
        ConfigMismatchError: our rows were made with another fingerprint (and no ``overwrite``).
    """
    manifest, rows = Path(manifest), Path(rows)
    owned = [rows, *map(Path, files)]
    for path in (manifest, *owned):
        if path.is_dir():
            raise OutputExistsError(f"{path} is a folder, not a file this command writes: choose another output")
    saved = _read_manifest(manifest, command) if manifest.exists() else None
    if manifest.exists() and saved is None:
        raise OutputExistsError(f"{manifest} exists and was not written by `{command}`: choose another output "
                                "(nothing was changed)")
    if saved is None:
        present = [p for p in owned if p.exists()]
        if present:
            raise OutputExistsError(f"{present[0]} exists but has no {manifest.name} beside it, so `{command}` did "
                                    "not write it (or an older version did): choose another output, or move it "
                                    "away (nothing was changed)")
    has_rows = rows.is_file() and rows.stat().st_size > 0
    resume = saved is not None and has_rows and not overwrite
    if resume:
        diff = differences(saved["fingerprint"], fingerprint)
        if diff:
            raise ConfigMismatchError(rows, diff, **({"hint": hint} if hint else {}))
    if write:
        if saved is not None and not resume:
            for path in owned:
                path.unlink(missing_ok=True)
        write_json(manifest, {"written_by": command, "fingerprint": fingerprint, "config": dict(config or {})})
    return resume


# --- one run at a time -------------------------------------------------------------------------------------

_HELD: dict[str, list] = {}  # lock path -> [fd, depth]: a process may re-enter its own lock


def _holder_text(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that is just starting"


@contextmanager
def output_lock(path: str | os.PathLike, what: str):
    """Hold the lock file ``path`` (an advisory ``flock``, which the kernel drops when its process dies; the
    file names the holder's PID and host) while the block runs, for the output ``what``.

    A lock left by a killed run is free again (the kernel released it) and is taken over with a log line.
    On a file system without ``flock`` the run goes on unlocked, with a warning.

    Raises:
        OutputInUseError: another live process holds it (the message names its PID and host).
    """
    key = str(Path(path).resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(Path(path), what)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        if fd is not None:
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            os.close(fd)


def _acquire(path: Path, what: str) -> int | None:
    try:
        import fcntl
    except ImportError:  # not POSIX
        logger.warning("cannot lock %s here: make sure no other run writes %s", path, what)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise OutputInUseError(f"{what} is being written by another run ({holder}); wait for it to end or use "
                                   f"another output (lock file: {path})") from None
        except OSError as e:  # e.g. ENOLCK: no lock support on this file system
            logger.warning("cannot lock %s (%s): make sure no other run writes %s", path, e.strerror, what)
            return fd
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed the file while we opened it: lock the new one
    if os.fstat(fd).st_size:
        logger.warning("%s: taking over the lock of an earlier run that ended without releasing it (%s)", what,
                       _holder_text(fd))
    os.ftruncate(fd, 0)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.pwrite(fd, json.dumps(info).encode(), 0)
    return fd


# --- fingerprints ------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    """The full sha256 of a file (inputs: small enough to read whole)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def files_fingerprint(path: str | os.PathLike) -> str:
    """A cheap content fingerprint of a folder's weight, config, tokenizer and data files (recursive).

    Hashes each file's relative name, size, first and last ``EDGE_BYTES`` (a changed checkpoint changes its
    size or the bytes at its ends: safetensors headers hold every tensor's offsets; hashing GBs in full would
    cost more than a small eval).
    """
    root = Path(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES):
        size = f.stat().st_size
        digest.update(f"{f.relative_to(root).as_posix()}:{size}:".encode())
        with f.open("rb") as fh:
            digest.update(fh.read(EDGE_BYTES))
            if size > 2 * EDGE_BYTES:
                fh.seek(-EDGE_BYTES, os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def hub_revision(repo_id: str, repo_type: str = "model") -> str | None:
    """The commit of ``repo_id`` in the local Hugging Face cache (after its tokenizer or files were fetched)."""
    from huggingface_hub import try_to_load_from_cache

    names = ("tokenizer_config.json", "config.json") if repo_type == "model" else ("README.md",)
    for name in names:
        try:
            cached = try_to_load_from_cache(repo_id, name, repo_type=repo_type)
        except ValueError:  # not a valid repo id
            return None
        if isinstance(cached, str):
            return Path(cached).parent.name
    return None


def weights_fingerprint(name_or_path: str | os.PathLike | None) -> str | None:
    """What identifies a model's (or adapter's) weights: ``files_fingerprint`` of a local folder, a single
    file's sha256, or ``<hub id>@<cached commit>`` for a Hub id; ``None`` for ``None``."""
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if path.is_dir():
        return files_fingerprint(path)
    if path.is_file():
        return file_sha256(path)[:16]
    return f"{name_or_path}@{hub_revision(str(name_or_path)) or 'unknown revision'}"


def pin_settings(path: str | os.PathLike, settings: Mapping, record: Mapping, *, work: str = "its work") -> None:
    """A recipe's settings file: refuse the folder's work made with other ``settings``, then write them.

    ``path`` (``<output_dir>/<recipe>_config.json``) holds ``{"settings": ..., **record}``; ``record`` is what
    else is worth keeping (the full arguments). Settings that differ raise ``ConfigMismatchError`` listing
    each changed key; an unreadable file is a ``UserError``.
    """
    path = Path(path)
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))["settings"]
            if not isinstance(saved, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path}: unreadable, so the settings of the work in {path.parent} cannot be checked; "
                            "use another output_dir") from None
        diff = differences(saved, settings)
        if diff:
            raise ConfigMismatchError(path.parent, diff, f"use another output_dir ({work} was made with these settings)")
    write_json(path, {"settings": dict(settings), **record})


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 (16 hex) of a tokenizer's vocabulary and special tokens: ids must mean the same words."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    blob = json.dumps([vocab, special], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def source_fingerprint(source: object, **details: object) -> str:
    """What identifies an input: a file's sha256, a folder's ``files_fingerprint``, else the Hub id with
    ``details`` (split, subset) and the cached dataset commit."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_file():
            return file_sha256(path)
        if path.is_dir():
            return files_fingerprint(path)
        extra = ",".join(f"{k}={v}" for k, v in details.items())
        return f"{source}[{extra}]@{hub_revision(str(source), 'dataset') or 'unknown revision'}"
    return repr(source)


def describe(obj: object) -> object:
    """A JSON-ready description of a settings object (a dataclass: its name and fields)."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(obj) and not isinstance(obj, type):
        return {"type": type(obj).__name__, **asdict(obj)}
    return repr(obj)


def sidecar(path: str | os.PathLike, suffix: str) -> Path:
    """``<path><suffix>`` (e.g. ``out.jsonl.config.json``)."""
    return Path(f"{os.fspath(path)}{suffix}")


def check_output_path(path: str | os.PathLike, what: str = "--output", *, folder: bool = True) -> Path:
    """Check, before any work, that ``path`` can be written: not a file where a folder is wanted (or the
    reverse), no file among its parents, and the nearest existing folder writable.

    Args:
        what: how the user named it (``--output``, ``output_dir``), for the message.
        folder: ``path`` is a folder (True) or a file (False).

    Raises:
        UserError: naming the path and what to do.
    """
    path = Path(path).expanduser()
    if path.exists():
        if folder and not path.is_dir():
            raise UserError(f"{what} {path} is a file, not a folder; give a folder (or a new path)")
        if not folder and path.is_dir():
            raise UserError(f"{what} {path} is a folder; give a file path")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise UserError(f"{what} {path}: {existing} is a file, not a folder; choose another path")
    # a new file is created in (a new folder under) the nearest existing folder; files are replaced by renaming,
    # so their folder must be writable, and appended to, so the file too
    folder_to_write = existing if existing.is_dir() else existing.parent
    if not os.access(folder_to_write, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: cannot write in {folder_to_write} (permission denied or read-only); "
                        "choose another path or fix its permissions")
    if existing == path and path.is_file() and not os.access(path, os.W_OK):
        raise UserError(f"{what} {path}: the file is not writable; choose another path or fix its permissions")
    return path


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """Check that ``path`` is a readable file (not a folder), before any work.

    Raises:
        UserError: naming the path and what is wrong.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{what} {path}: file not found" + ("" if path.is_absolute() else f" (in {Path.cwd()})"))
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; give a file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{what} {path}: cannot read it (permission denied); fix its permissions")
    return path
