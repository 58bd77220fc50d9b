"""Train one SFT variant with TRL's ``SFTTrainer`` (loss on the completion only, optional LoRA)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def build_sft_trainer(sft_args: Any, model_args: Any, train_dataset: Any, model_path: str) -> Any:
    """An ``SFTTrainer`` on a prompt-completion dataset, with LoRA when ``model_args.use_peft``.

    ``completion_only_loss`` is forced on: TRL would infer it from the dataset's columns, but a config
    that turned it off would silently train on the prompt too.
    """
    from trl import SFTTrainer, get_peft_config

    from effreason.models import load_tokenizer
    from effreason.training.tracking import LOG_FILE, JsonlLogCallback

    if sft_args.completion_only_loss is False:
        raise ValueError("completion_only_loss: false trains on the prompt tokens too; the SFT recipe needs the "
                         "loss on the completion only (drop the key or set it to true)")
    sft_args = replace(sft_args, completion_only_loss=True,
                       model_init_kwargs={**(sft_args.model_init_kwargs or {}), "dtype": model_args.dtype or "auto"})
    trainer = SFTTrainer(model=model_path, args=sft_args, train_dataset=train_dataset,
                         processing_class=load_tokenizer(model_path), peft_config=get_peft_config(model_args))
    trainer.add_callback(JsonlLogCallback(Path(sft_args.output_dir) / LOG_FILE))
    return trainer


def variant_args(sft_args: Any, output_dir: str | Path, name: str) -> Any:
    """The SFT settings of variant ``name``: its own output folder and run name."""
    run_name = f"{sft_args.run_name}-{name}" if sft_args.run_name else name
    return replace(sft_args, output_dir=str(output_dir), run_name=run_name)


def variant_config(sft_args: Any, model_args: Any, output_dir: str | Path, name: str, data: Mapping[str, Any],
                   prompt: Mapping[str, Any]) -> dict:
    """A variant's resolved settings, as ``<output_dir>/stage_config.json`` holds them: the settings its
    ``data`` was built with (``data/settings.json``'s), the ``prompt`` settings its rows are rendered with
    (instruction, system prompt), its ``sft`` settings and the ``model`` it starts from (after any warm-up).
    A finished variant is skipped only if they match (``effreason.training.output_dir.check_stage_config``)."""
    return {"stage": name, "data": dict(data), "prompt": dict(prompt),
            "sft": variant_args(sft_args, output_dir, name).to_dict(), "model": asdict(model_args)}


def train_variant(sft_args: Any, model_args: Any, train_dataset: Any, output_dir: str | Path,
                  name: str) -> dict:
    """Train ``name`` into ``output_dir`` from ``model_args.model_name_or_path`` and save the model (or
    the LoRA adapter) there. A variant that finished before (``training_done.json``) is skipped: the recipe
    checked its settings first (``variant_config``).

    Returns:
        ``{"output_dir", "global_step", "train_runtime_s", "final_loss", "peft", "start"}``.
    """
    from effreason.models import resolve_model_path
    from effreason.training.checkpoints import train_once

    args = variant_args(sft_args, output_dir, name)
    start = resolve_model_path(model_args.model_name_or_path)

    def details(trainer: Any, result: Any, resumed_from: Any) -> dict:
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return {"final_loss": losses[-1] if losses else None, "peft": bool(model_args.use_peft), "start": start,
                "train_rows": len(train_dataset)}

    return train_once(lambda: build_sft_trainer(args, model_args, train_dataset, start), output_dir,
                      args.resume_from_checkpoint, details=details)


def trained_model(info: dict) -> tuple[str, str | None]:
    """``(model, adapter)`` to evaluate: the saved model, or the start model plus the saved adapter."""
    if info.get("peft"):
        return info["start"], info["output_dir"]
    return info["output_dir"], None
