"""The output directory of one eval run, and resuming an interrupted run.

Files: ``config.json`` (the resolved config, written before anything is generated),
``samples.jsonl`` (one row per completion, appended and flushed after each chunk), ``results.json``
and ``summary.md`` (recomputed from ``samples.jsonl`` at the end, so a resumed run and an
uninterrupted one report the same figures).

A row is keyed by ``(id, sample, budget)`` (``budget`` is ``None`` for the unbudgeted completion).
A process killed mid-write can leave a torn last line: it is dropped with a warning. Any other bad
line is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from effreason.jsonl import AppendLog, read_append_log, write_json, write_jsonl

logger = logging.getLogger(__name__)

CONFIG_FILE, SAMPLES_FILE, RESULTS_FILE, SUMMARY_FILE = "config.json", "samples.jsonl", "results.json", "summary.md"

RowKey = tuple[str, int, int | None]


class ConfigMismatchError(ValueError):
    """The output folder holds a run made with other settings (or weights); ``differences`` maps each
    differing key to ``(saved, now)``."""

    def __init__(self, out_dir: Path, differences: dict[str, tuple[object, object]]):
        details = "; ".join(f"{k}: saved {saved!r}, now {now!r}" for k, (saved, now) in differences.items())
        super().__init__(f"{out_dir} holds a run with a different config ({details}); "
                         "use a new --output directory, or --overwrite to discard the old run")
        self.out_dir, self.differences = out_dir, differences


def row_key(row: dict) -> RowKey:
    """``(id, sample index, budget)`` of a samples.jsonl row."""
    return str(row["id"]), int(row["sample"]), row.get("budget")


def read_samples(path: str | os.PathLike) -> tuple[list[dict], bool]:
    """Rows of a samples file, dropping a torn last line (``effreason.jsonl.read_append_log``).
    Returns ``(rows, torn)``."""
    return read_append_log(path, check=row_key)


def check_config(out_dir: Path, fingerprint: dict, *, overwrite: bool) -> None:
    """Make ``out_dir`` ready for a run with this config, or refuse to mix runs.

    With ``overwrite`` the previous run's files are removed. Otherwise a saved config must agree with
    ``fingerprint`` (every setting that changes results) for the run to resume.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f for f in (CONFIG_FILE, SAMPLES_FILE, RESULTS_FILE, SUMMARY_FILE)]
    if overwrite:
        for f in files:
            f.unlink(missing_ok=True)
    config_path = out_dir / CONFIG_FILE
    if config_path.is_file():
        saved = json.loads(config_path.read_text(encoding="utf-8")).get("fingerprint", {})
        diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != _jsonable(fingerprint.get(k)))
        if diff:
            raise ConfigMismatchError(out_dir, {k: (saved.get(k), fingerprint.get(k)) for k in diff})
    elif (out_dir / SAMPLES_FILE).is_file():
        raise ValueError(f"{out_dir / SAMPLES_FILE} exists without {CONFIG_FILE}; use a new --output or --overwrite")


def _jsonable(value: object) -> object:
    """The value as it reads back from JSON (tuples become lists, int dict keys become strings)."""
    return json.loads(json.dumps(value, default=str))


def files_identity(path: str | os.PathLike | None) -> str | None:
    """A cheap identity of a local model or adapter directory, so a resume notices changed weights.

    Hashes each weight or config file's name, size and its first and last MiB (full hashes of
    multi-GB checkpoints would cost more than a small eval). ``None`` for hub ids and missing paths.
    """
    if path is None or not Path(path).is_dir():
        return None
    digest = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.suffix not in (".safetensors", ".bin", ".json") or not f.is_file():
            continue
        size = f.stat().st_size
        digest.update(f"{f.name}:{size}:".encode())
        with f.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                digest.update(fh.read())
    return digest.hexdigest()[:16]


def write_config(out_dir: Path, fingerprint: dict, config: dict) -> None:
    """Save the resolved config; ``fingerprint`` is what a resume must match."""
    write_json(out_dir / CONFIG_FILE, {"fingerprint": fingerprint, "config": config})


def keep_rows(path: Path, rows: list[dict]) -> None:
    """Rewrite the samples file with only ``rows`` (atomically), e.g. to drop an incomplete chunk."""
    write_jsonl(path, rows)


#: Appends rows to ``samples.jsonl`` (one flushed write per chunk).
SampleWriter = AppendLog
