"""Deployment artifacts on disk: a folder with a safetensors weights file and a JSON that says what it is.

Exit probes (``effreason.early_exit.probe``) and steering vectors (``effreason.steering.vector``) are
such folders; ``read_artifact`` is their shared first check on load: the folder and both files exist, the
JSON parses and names the expected format and version, the required keys are there, and the weights file's
sha256 is the one the JSON records. Each failure is one line naming the file and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def read_artifact(folder: str | Path, *, meta_file: str, weights_file: str, fmt: str, version: int,
                  required: Sequence[str], error: type[Exception], what: str, made_by: str) -> tuple[dict, Path]:
    """The artifact's JSON and the path of its checked weights file.

    Args:
        fmt / version: the ``format`` and ``version`` the JSON must hold.
        required: keys the JSON must have (besides ``format``).
        error: the exception class raised (a ``ValueError`` subclass of the artifact's module).
        what: the artifact's name in messages ("probe", "steering vector").
        made_by: where such folders come from ("recipes/early_exit.py into <output_dir>/probe").
    """
    from effreason.outputs import file_sha256

    folder = Path(folder)
    if folder.is_file():
        raise error(f"{folder} is a file; an effreason {what} is a folder holding {meta_file} and {weights_file}")
    meta_path, weights_path = folder / meta_file, folder / weights_file
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise error(f"{path}: missing; an effreason {what} folder holds {meta_file} and {weights_file} (written by {made_by})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{meta_path}: not valid JSON ({e}); the {what} folder is damaged: rebuild it") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise error(f"{meta_path}: not an effreason {what} (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    missing = [k for k in required if k not in meta]
    if missing:
        raise error(f"{meta_path}: missing key(s) {', '.join(missing)}; the {what} folder is damaged: rebuild it")
    if meta.get("version") != version:
        raise error(f"{meta_path}: {what} format version {meta.get('version')}, this effreason reads {version}")
    if not isinstance(meta.get("files"), dict) or meta["files"].get(weights_file) != file_sha256(weights_path):
        raise error(f"{weights_path}: its sha256 differs from the one in {meta_file}: the file is corrupt or from "
                    f"another {what}; rebuild it")
    return meta, weights_path
