"""The output directory of one eval run, and resuming an interrupted run.

Files: ``config.json`` (the resolved config and the fingerprint a resume must match, written before
anything is generated; it marks the folder as eval's, see ``effreason.outputs``),
``samples.jsonl`` (one row per completion, appended and flushed after each chunk), ``results.json``
and ``summary.md`` (recomputed from ``samples.jsonl`` at the end, so a resumed run and an
uninterrupted one report the same figures).

A row is keyed by ``(id, sample, budget)`` (``budget`` is ``None`` for the unbudgeted completion).
A process killed mid-write can leave a torn last line: it is dropped with a warning. Any other bad
line is an error naming the file and line. ``.effreason.lock`` keeps a second run out while one writes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from effreason.jsonl import AppendLog, read_append_log, write_jsonl
from effreason.outputs import (
    ConfigMismatchError as ConfigMismatchError,  # re-exported: store.ConfigMismatchError
)
from effreason.outputs import OutputExistsError, claim_output, output_lock

logger = logging.getLogger(__name__)

CONFIG_FILE, SAMPLES_FILE, RESULTS_FILE, SUMMARY_FILE = "config.json", "samples.jsonl", "results.json", "summary.md"
LOCK_FILE = ".effreason.lock"
COMMAND = "effreason eval"

RowKey = tuple[str, int, int | None]


def row_key(row: dict) -> RowKey:
    """``(id, sample index, budget)`` of a samples.jsonl row."""
    return str(row["id"]), int(row["sample"]), row.get("budget")


def read_samples(path: str | os.PathLike) -> tuple[list[dict], bool]:
    """Rows of a samples file, dropping a torn last line (``effreason.jsonl.read_append_log``).
    Returns ``(rows, torn)``."""
    return read_append_log(path, check=row_key)


def output_files(out_dir: Path) -> list[Path]:
    """Every file a run writes in ``out_dir``."""
    return [out_dir / name for name in (CONFIG_FILE, SAMPLES_FILE, RESULTS_FILE, SUMMARY_FILE)]


def claim(out_dir: Path, fingerprint: dict, config: dict, *, overwrite: bool) -> bool:
    """Make ``out_dir`` ready for a run with this ``fingerprint`` (every setting, weight and input that
    changes results), or refuse to mix runs or to write over files eval did not write
    (``effreason.outputs.claim_output``). Returns True when there are rows to resume."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return claim_output(out_dir / CONFIG_FILE, out_dir / SAMPLES_FILE, [out_dir / RESULTS_FILE, out_dir / SUMMARY_FILE],
                        fingerprint, command=COMMAND, overwrite=overwrite, config=config,
                        hint="use a new --output directory, or --overwrite to discard the old run")


def lock(out_dir: Path):
    """The lock on ``out_dir`` (``effreason.outputs.output_lock``): one run writes it at a time."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"--output {out_dir} is a file; eval writes a folder there: choose another path")
    out_dir.mkdir(parents=True, exist_ok=True)
    return output_lock(out_dir / LOCK_FILE, f"the eval output {out_dir}")


def previous_results(out_dir: Path) -> dict | None:
    """The results.json of an earlier run in ``out_dir`` (None if there is none or it is unreadable)."""
    try:
        return json.loads((out_dir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def keep_rows(path: Path, rows: list[dict]) -> None:
    """Rewrite the samples file with only ``rows`` (atomically), e.g. to drop an incomplete chunk."""
    write_jsonl(path, rows)


#: Appends rows to ``samples.jsonl`` (one flushed write per chunk).
SampleWriter = AppendLog
