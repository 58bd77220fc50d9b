"""Train one SFT variant with TRL's ``SFTTrainer`` (loss on the completion only, optional LoRA)."""

from __future__ import annotations

import gc
import json
import logging
import time
from dataclasses import replace
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
    from effreason.training.run import LOG_FILE, JsonlLogCallback

    if sft_args.completion_only_loss is False:
        raise ValueError("completion_only_loss: false trains on the prompt tokens too; the SFT recipe needs the "
                         "loss on the completion only (drop the key or set it to true)")
    sft_args = replace(sft_args, completion_only_loss=True,
                       model_init_kwargs={**(sft_args.model_init_kwargs or {}), "dtype": model_args.dtype or "auto"})
    trainer = SFTTrainer(model=model_path, args=sft_args, train_dataset=train_dataset,
                         processing_class=load_tokenizer(model_path), peft_config=get_peft_config(model_args))
    trainer.add_callback(JsonlLogCallback(Path(sft_args.output_dir) / LOG_FILE))
    return trainer


def train_variant(sft_args: Any, model_args: Any, train_dataset: Any, output_dir: str | Path,
                  name: str) -> dict:
    """Train ``name`` into ``output_dir`` from ``model_args.model_name_or_path`` and save the model (or
    the LoRA adapter) there. A variant that finished before (``training_done.json``) is skipped.

    Returns:
        ``{"output_dir", "global_step", "train_runtime_s", "final_loss", "peft", "start"}``.
    """
    from effreason.jsonl import write_json
    from effreason.models import resolve_model_path
    from effreason.training.run import DONE_FILE, resume_point, stage_done

    out = Path(output_dir)
    if stage_done(out):
        logger.info("%s already trained (%s): skipping", name, out / DONE_FILE)
        return json.loads((out / DONE_FILE).read_text(encoding="utf-8"))
    run_name = f"{sft_args.run_name}-{name}" if sft_args.run_name else name
    args = replace(sft_args, output_dir=str(out), run_name=run_name)
    start = resolve_model_path(model_args.model_name_or_path)
    trainer = build_sft_trainer(args, model_args, train_dataset, start)
    clock = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_point(out, args.resume_from_checkpoint))
    wall = time.perf_counter() - clock
    trainer.save_model(str(out))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    info = {"output_dir": str(out), "global_step": trainer.state.global_step, "train_runtime_s": wall,
            "final_loss": losses[-1] if losses else None, "peft": bool(model_args.use_peft), "start": start,
            "train_rows": len(train_dataset)}
    if trainer.accelerator.is_main_process:
        write_json(out / DONE_FILE, info)
    trainer.accelerator.wait_for_everyone()
    _finish_wandb(args)
    del trainer
    gc.collect()
    return info


def _finish_wandb(args: Any) -> None:
    """Close this variant's wandb run, so the next variant logs to a run of its own."""
    report_to = args.report_to or []
    if "wandb" in report_to or report_to == "all":
        import wandb

        if wandb.run is not None:
            wandb.finish()


def trained_model(info: dict) -> tuple[str, str | None]:
    """``(model, adapter)`` to evaluate: the saved model, or the start model plus the saved adapter."""
    if info.get("peft"):
        return info["start"], info["output_dir"]
    return info["output_dir"], None
