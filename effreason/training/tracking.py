"""What a training run reports: wandb set-up and teardown, and a JSONL log of every logged step."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"


class JsonlLogCallback(TrainerCallback):
    """Append every logged step (rewards, token stats, clip ratios, ...) to ``<output_dir>/train_log.jsonl``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def _reports_to_wandb(report_to: Any) -> bool:
    report_to = report_to or []
    return "wandb" in report_to or report_to == "all"


def configure_wandb(training_args: Any) -> None:
    """With wandb in ``report_to`` and no credentials, log offline (``WANDB_MODE=offline``) instead of prompting."""
    if not _reports_to_wandb(training_args.report_to):
        return
    os.environ.setdefault("WANDB_DIR", str(Path(training_args.output_dir)))  # wandb/ next to the checkpoints
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace"):
        return
    os.environ["WANDB_MODE"] = "offline"
    logger.info("wandb: no credentials found, logging offline (sync later with `wandb sync`)")


def finish_wandb(training_args: Any) -> None:
    """Close the current wandb run, so the next stage or variant logs to a run of its own."""
    if _reports_to_wandb(training_args.report_to):
        import wandb

        if wandb.run is not None:
            wandb.finish()
