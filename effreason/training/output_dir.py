"""A recipe's ``output_dir``: whose it is, and when its stages' earlier work may be reused.

The recipes follow the output rules of ``effreason.outputs``:

- ``claim_output_dir``, at start-up on the main process: a missing or empty folder gets ``effreason_run.json``
  (``written_by``: the recipe); a folder that holds anything else without that manifest, or another recipe's
  manifest, is refused (``OutputExistsError``) and left untouched. A folder a recipe wrote before manifests
  existed (it holds ``stage_config.json``, ``training_done.json``, ``sft_config.json`` or ``summary.json``)
  is adopted as the recipe's that wrote it.
- ``check_stage_config``, before a stage's settings are saved: a stage folder with earlier work (a finished
  training, which is skipped; a ``checkpoint-*``, which is resumed) is reused only if its saved
  ``stage_config.json`` holds the same settings as now, except ``RESUME_IGNORED_KEYS``; otherwise
  ``ConfigMismatchError`` lists each ``key: old -> new``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from effreason.errors import UserError
from effreason.jsonl import write_json
from effreason.outputs import ConfigMismatchError, OutputExistsError, differences, refuse_unowned_directory
from effreason.training.checkpoints import DONE_FILE
from effreason.training.stages import STAGE_CONFIG_FILE

logger = logging.getLogger(__name__)

RUN_MANIFEST = "effreason_run.json"
#: Files ``recipes/sft.py`` wrote at the top of its ``output_dir`` before run manifests existed (the RL
#: recipes left ``stage_config.json``, every recipe ``training_done.json``, at the top or one folder down).
SFT_RUN_FILES = ("sft_config.json", "summary.json")
#: Settings that do not shape a stage's trained weights, so a finished stage or a checkpoint made with other
#: values of them is still reused; a name ending in ``_`` is a prefix. Everything else must match.
RESUME_IGNORED_KEYS = (
    "output_dir", "run_name", "project", "report_to", "logging_", "log_", "push_to_hub", "hub_",  # where it goes
    "eval_", "per_device_eval_batch_size", "num_completions_to_print", "disable_tqdm",  # what is shown
    "save_", "resume_from_checkpoint",  # checkpoint cadence, resuming itself
    "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_persistent_workers",  # how fast
    "local_rank", "vllm_gpu_memory_utilization", "vllm_server_",
    # where a stage's settings came from; lgrpo's stage blocks, already in each stage's resolved values
    "from_stage_block", "command_line_over_stage_block", "stage1", "stage2",
)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _earlier_writer(path: Path, recipe: str) -> str | None:
    """The recipe that wrote ``path`` before run manifests existed (``recipe`` when a ``training_done.json``
    alone says only that a recipe did), or None when nothing there is a recipe's."""
    if any((path / name).is_file() for name in SFT_RUN_FILES):
        return "recipes/sft.py"
    folders = [path, *sorted(p for p in path.iterdir() if p.is_dir())]
    for folder in folders:
        stage = (_read_json(folder / STAGE_CONFIG_FILE) or {}).get("stage")
        if stage:
            return "recipes/tldr.py" if stage == "tldr" else "recipes/lgrpo.py"
    return recipe if any((folder / DONE_FILE).is_file() for folder in folders) else None


def claim_output_dir(output_dir: str | os.PathLike, recipe: str) -> None:
    """Make ``output_dir`` ``recipe``'s (see the module docstring), before any heavy work; main process only.

    Args:
        recipe: how the recipe is named in messages and in the manifest (``recipes/lgrpo.py``).

    Raises:
        OutputExistsError: the folder holds what ``recipe`` did not write, or another recipe's run.
    """
    path = Path(output_dir)
    manifest = path / RUN_MANIFEST
    writer = (_read_json(manifest) or {}).get("written_by") if manifest.is_file() else None
    if writer is None and path.is_dir() and not manifest.exists():
        writer = _earlier_writer(path, recipe)
    if writer is None:
        refuse_unowned_directory(path, False, f"{recipe} (it holds no readable {RUN_MANIFEST})")
    elif writer != recipe:
        raise OutputExistsError(f"{path} holds a run of {writer}, not of {recipe}: choose another output_dir "
                                "(nothing was changed)")
    if not manifest.is_file():
        if writer is not None:
            logger.info("%s: a run of %s from before %s existed; adopting it", path, writer, RUN_MANIFEST)
        write_json(manifest, {"written_by": recipe, "created": time.strftime("%Y-%m-%d %H:%M:%S")})


def _ignored(key: str) -> bool:
    return any(key == name or (name.endswith("_") and key.startswith(name)) for name in RESUME_IGNORED_KEYS)


def resume_settings(config: Mapping) -> dict:
    """A stage's saved settings (``{section: {key: value}}`` and top-level values) flattened to
    ``{"section.key": value}``, without ``RESUME_IGNORED_KEYS``: what a reuse must match."""
    flat = {}
    for section, value in config.items():
        if _ignored(section):
            continue
        if isinstance(value, Mapping):
            flat.update({f"{section}.{key}": v for key, v in value.items() if not _ignored(key)})
        else:
            flat[section] = value
    return flat


def _earlier_work(stage_dir: str | os.PathLike) -> list[str]:
    """What an earlier run left in a stage folder that this run would reuse: ``training_done.json`` (the stage
    is skipped) and ``checkpoint-*`` folders (resumed)."""
    stage_dir = Path(stage_dir)
    found = [DONE_FILE] if (stage_dir / DONE_FILE).is_file() else []
    return found + sorted(p.name for p in stage_dir.glob("checkpoint-*") if p.is_dir())


def check_stage_config(stage_dir: str | os.PathLike, config: Mapping, *, reused: Iterable[str | os.PathLike] = (),
                       after: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse to reuse a stage's earlier work made with other settings; call it before ``config`` is saved.

    Args:
        config: the stage's resolved settings, as its ``stage_config.json`` holds them.
        reused: other outputs of an earlier run that this stage reuses when present (TLDR's level warm-up).
        after: earlier stages this one starts from (lgrpo's stage 1 for its stage 2): the stage's earlier work
            is reused only while each of them still holds its finished training.

    Raises:
        ConfigMismatchError: the saved settings differ (``key: old -> new``).
        UserError: the folder holds earlier work but no readable ``stage_config.json``, or an earlier stage
            in ``after`` no longer holds its finished training.
    """
    stage_dir = Path(stage_dir)
    work = _earlier_work(stage_dir) + [str(p) for p in reused if Path(p).exists()]
    if not work:
        return
    hint = f"use another output_dir, or delete {stage_dir} to train it again"
    saved = _read_json(stage_dir / STAGE_CONFIG_FILE)
    if saved is None:
        raise UserError(f"{stage_dir} holds an earlier run ({', '.join(work[:3])}) but no readable "
                        f"{STAGE_CONFIG_FILE}, so its settings cannot be checked: {hint}")
    diff = differences(resume_settings(saved), resume_settings(config))
    if diff:
        raise ConfigMismatchError(stage_dir, diff, hint)
    gone = [Path(p) for p in after if not (Path(p) / DONE_FILE).is_file()]
    if gone:
        raise UserError(f"{stage_dir} holds an earlier run that started from a finished {gone[0]}, which is gone "
                        f"or training again: {hint}")
