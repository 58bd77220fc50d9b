"""Deployment artifacts on disk: a folder with a safetensors weights file and a JSON that says what it is.

Exit probes (``effreason.early_exit.probe``), steering vectors (``effreason.steering.vector``) and adapter
routers (``effreason.adapters.router``) are such folders; ``read_artifact`` is their shared first check on load: the folder and both files exist, the
JSON parses and names the expected format and version, the required keys are there, and the weights file's
sha256 is the one the JSON records. Each failure is one line naming the file and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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


def model_record(name: str, model_path: str, tokenizer: Any, *, num_layers: int, hidden_size: int,
                 adapter: str | None = None) -> dict:
    """What an artifact built on a model records of it (``check_built_for`` compares it): the model's name,
    folder, weights, adapter and tokenizer fingerprints, and shape."""
    from effreason.outputs import tokenizer_fingerprint, weights_fingerprint

    return {"name": name, "path": str(Path(model_path).resolve()) if Path(model_path).exists() else model_path,
            "weights": weights_fingerprint(model_path), "adapter": weights_fingerprint(adapter) if adapter else None,
            "tokenizer": tokenizer_fingerprint(tokenizer), "num_layers": num_layers, "hidden_size": hidden_size}


def check_built_for(built: dict, model_path: str | None, tokenizer: Any, *, error: type[Exception], what: str,
                    rebuild: str, adapter: str | None = None, depth: int | None = None,
                    hidden_size: int | None = None) -> None:
    """Refuse a model other than the one an artifact was built on (``model_record``): weights, adapter,
    tokenizer, depth and width, where both sides know them.

    Raises:
        error: naming what differs and ``rebuild`` (how to make one for this model).
    """
    from effreason.models import resolve_model_path
    from effreason.outputs import tokenizer_fingerprint, weights_fingerprint

    if model_path is not None:
        model_path = resolve_model_path(model_path)  # `lab` -> the shipped checkpoint
    adapter_now = weights_fingerprint(adapter) if adapter else None
    if built.get("adapter") != adapter_now:
        raise error(f"this {what} was built for model {built.get('name')!r} with adapter {built.get('adapter')}, and "
                    f"the model now has adapter {adapter_now} ({adapter}): its hidden states differ; {rebuild}")
    now = {"weights": weights_fingerprint(model_path) if model_path else None,
           "tokenizer": tokenizer_fingerprint(tokenizer) if tokenizer is not None else None,
           "num_layers": depth, "hidden_size": hidden_size}
    diff = [k for k, v in now.items() if v is not None and built.get(k) is not None and built.get(k) != v]
    if diff:
        raise error(f"this {what} was built for model {built.get('name')!r} and does not fit {model_path}: "
                    f"{', '.join(f'{k} {built.get(k)} != {now[k]}' for k in diff)}; {rebuild}")
