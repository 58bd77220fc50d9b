"""Rows from wherever users keep their data: a JSONL file, a saved or file-based Hugging Face dataset,
or a dataset id on the Hub.

``iter_rows`` yields ``(where, number, row)``: ``where`` names the file (or ``<dataset>[<split>]``) and
``number`` the 1-based line (or row), which is what ``effreason.jsonl.DataError`` messages name. A
source is, in the order tried:

- a ``datasets.Dataset`` object;
- a ``.jsonl`` file (read line by line, so errors name the line);
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``split`` picks a
  split of a ``DatasetDict``; a single ``Dataset`` has none);
- another data file or folder that ``datasets.load_dataset`` reads (``.parquet``, ``.json``,
  ``.csv``, ``.arrow``, a folder of them);
- otherwise a Hub dataset id (``subset`` = its configuration), loaded with ``datasets.load_dataset``
  (which honours ``HF_HUB_OFFLINE`` and the local cache).

``rename_fields`` maps a dataset's own column names onto the fields a loader expects (e.g. LIMO's
``question`` onto ``problem``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from effreason.jsonl import DataError, iter_jsonl

#: file suffix -> ``datasets`` packaged builder
_BUILDERS = {".parquet": "parquet", ".json": "json", ".csv": "csv", ".arrow": "arrow"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hub repository id (``name`` or ``owner/name``)."""
    return _HUB_ID.match(text) is not None


def _dataset_rows(data, where: str) -> Iterator[tuple[str, int, dict]]:
    for index, row in enumerate(data):
        yield where, index + 1, dict(row)


def _saved_dataset(path: Path, split: str):
    """``(rows, where)`` of a ``save_to_disk`` folder (a DatasetDict's ``split``; a single Dataset has
    no splits), or None if ``path`` is not one."""
    import datasets

    if (path / "dataset_dict.json").is_file():
        data = datasets.load_from_disk(str(path))
        if split not in data:
            raise ValueError(f"{path} has no split {split!r}; splits: {', '.join(data)}")
        return data[split], f"{path}[{split}]"
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(path)), str(path)
    return None


def iter_rows(source: Any, *, split: str = "train", subset: str | None = None) -> Iterator[tuple[str, int, dict]]:
    """Yield ``(where, number, row)`` for every row of ``source`` (see the module docstring).

    Raises:
        DataError: a missing file, bad JSON in a JSONL file, or a row that is not an object.
        ValueError: a dataset without ``split``, or one that ``datasets`` cannot load (the message
            names the source and the cause: no network, unknown id, ...).
    """
    if not isinstance(source, (str, os.PathLike)):
        import datasets

        if isinstance(source, datasets.DatasetDict):
            if split not in source:
                raise ValueError(f"the dataset has no split {split!r}; splits: {', '.join(source)}")
            source = source[split]
        if not isinstance(source, datasets.Dataset):
            raise TypeError(f"expected a path, a Hub id or a datasets.Dataset, got {type(source).__name__}")
        name = source.info.dataset_name or "dataset"
        yield from _dataset_rows(source, f"{name}[{source.split}]" if source.split else name)
        return
    text = os.fspath(source)
    path = Path(text)
    if path.suffix in (".jsonl", ".ndjson"):
        for line, row in iter_jsonl(path):  # names the file if it does not exist
            yield text, line, row
        return
    if not path.exists() and (path.suffix in _BUILDERS or text.startswith(("/", ".", "~"))
                              or not looks_like_hub_id(text)):
        raise DataError(text, None, "file not found (nor a Hub dataset id)")
    import datasets  # JSONL is read without it

    if path.is_file() and path.suffix not in _BUILDERS:
        raise DataError(text, None, f"unknown data file type {path.suffix!r}; use JSONL or one of "
                                    f"{', '.join(_BUILDERS)}, or a dataset folder")
    saved = _saved_dataset(path, split) if path.is_dir() else None
    if saved is not None:
        data, where = saved
    else:
        try:
            if path.is_file():
                data, where = datasets.load_dataset(_BUILDERS[path.suffix], data_files=text, split="train"), text
            else:  # a folder of data files, or a Hub id
                data, where = datasets.load_dataset(text, subset, split=split), f"{text}[{split}]"
        except Exception as e:  # noqa: BLE001 - datasets raises many kinds; all mean "could not load"
            kind = "data file" if path.is_file() else "folder" if path.is_dir() else "Hub dataset"
            raise ValueError(f"could not load the {kind} {text!r} (split {split!r}"
                             f"{f', subset {subset!r}' if subset else ''}): {type(e).__name__}: {e}. Offline, "
                             "pass a JSONL file, a data file or a folder written by save_to_disk") from None
    yield from _dataset_rows(data, where)


def parse_field_map(items: Sequence[str] | Mapping[str, str] | None, allowed: Sequence[str]) -> dict[str, str]:
    """``["problem=question", ...]`` (or a mapping) -> ``{"problem": "question"}``, checked.

    Raises:
        ValueError: an item that is not ``FIELD=COLUMN``, or a field not in ``allowed``.
    """
    if not items:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            field, sep, column = str(item).partition("=")
            if not sep or not field.strip() or not column.strip():
                raise ValueError(f"column mapping {item!r} is not FIELD=COLUMN (e.g. problem=question)")
            pairs.append((field.strip(), column.strip()))
    out = {}
    for field, column in pairs:
        if field not in allowed:
            raise ValueError(f"column mapping names the field {field!r}; fields: {', '.join(allowed)}")
        out[field] = column
    return out


def rename_fields(row: dict, fields: Mapping[str, str], where: str, number: int) -> dict:
    """``row`` with ``row[field] = row[column]`` for each ``field -> column`` of ``fields``.

    Raises:
        DataError: a mapped column missing from the row (naming the columns it has).
    """
    if not fields:
        return row
    out = dict(row)
    for field, column in fields.items():
        if column not in row:
            raise DataError(where, number, f"column {column!r} (mapped to {field!r}) is missing (columns present: "
                                           f"{', '.join(sorted(row)) or 'none'})", field=column)
        out[field] = row[column]
    return out
