"""What effreason writes next to a reasoning adapter: the base model it was trained on, and its buckets.

A PEFT adapter folder (``adapter_config.json`` naming its base model, ``adapter_model.safetensors``) gets
``effreason_adapter.json``: the base model's fingerprints (``effreason.artifacts.model_record``), the length
buckets it was trained to obey (``effreason.adapters.buckets``) and how it was trained. ``check_adapter_base``
refuses to put the adapter on another base model; adapters from elsewhere (no such file) are checked by
PEFT alone when they load.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from effreason.adapters.buckets import Bucket, parse_buckets

INFO_FILE = "effreason_adapter.json"
FORMAT = "effreason-reasoning-adapter"
VERSION = 1


class AdapterError(ValueError):
    """A reasoning adapter that cannot be used as asked (another base model, no buckets, a damaged file)."""


def write_adapter_info(folder: str | Path, *, base: dict, buckets: Sequence[Bucket], training: dict) -> None:
    """Write ``effreason_adapter.json`` into an adapter folder."""
    from effreason.jsonl import write_json

    write_json(Path(folder) / INFO_FILE, {
        "format": FORMAT, "version": VERSION, "base": base,
        "buckets": {b.name: {"tokens": b.tokens, "instruction": b.instruction, "penalty": b.penalty}
                    | ({"floor": b.floor} if b.floor is not None else {}) for b in buckets},
        "training": training})


def read_adapter_info(folder: str | Path) -> dict | None:
    """The adapter's ``effreason_adapter.json``, or ``None`` for an adapter effreason did not train.

    Raises:
        AdapterError: the file is there but damaged.
    """
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{path}: not valid JSON ({e}); restore it or retrain the adapter") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or not isinstance(info.get("base"), dict):
        raise AdapterError(f"{path}: not an effreason reasoning-adapter file (format {FORMAT!r} with a 'base' record)")
    return info


def load_adapter_buckets(folder: str | Path) -> list[Bucket]:
    """The length buckets the adapter was trained with.

    Raises:
        AdapterError: the adapter has none (not trained by recipes/lora_adapter.py) or they are malformed.
    """
    info = read_adapter_info(folder)
    if info is None or not info.get("buckets"):
        raise AdapterError(f"{Path(folder) / INFO_FILE}: missing or without buckets; this adapter was not trained with "
                           "length buckets (recipes/lora_adapter.py writes them), so --bucket has no instruction to use")
    try:
        return parse_buckets(info["buckets"], str(Path(folder) / INFO_FILE))
    except ValueError as e:
        raise AdapterError(str(e)) from None


def check_adapter_base(folder: str | Path, model_path: str, tokenizer: Any) -> None:
    """Refuse to put the adapter on a base model other than the one it was trained on (weights, tokenizer).

    Raises:
        AdapterError: naming what differs and what to do.
    """
    from effreason.artifacts import check_built_for

    info = read_adapter_info(folder)
    if info is None:
        return
    base = dict(info["base"], adapter=None)  # the record is of the base alone
    check_built_for(base, model_path, tokenizer, error=AdapterError, what="reasoning adapter",
                    rebuild=f"pass the base model it was trained on ({info['base'].get('name')!r}) as --model, or "
                        "train an adapter for this model with recipes/lora_adapter.py --model_name_or_path ...")
