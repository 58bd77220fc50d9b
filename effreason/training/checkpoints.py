"""Train once: resume from the last checkpoint, skip what finished, save, mark done, free memory.

Shared by the RL stages (``recipes/lgrpo.py``, ``tldr.py``) and the SFT variants (``effreason.sft.train``).
What a stage folder holds is reused only after the recipe checked that it was made with the same settings
(``effreason.training.output_dir.check_stage_config``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from effreason.jsonl import write_json
from effreason.training.tracking import finish_wandb

logger = logging.getLogger(__name__)

DONE_FILE = "training_done.json"
TRAINING_ARGS_PICKLE = "training_args.bin"  # what ``Trainer.save_model`` adds next to the weights


def resume_point(output_dir: str | os.PathLike, resume: Any) -> str | bool | None:
    """What to pass to ``trainer.train(resume_from_checkpoint=...)``.

    ``resume`` is the config's ``resume_from_checkpoint``: a path, or true / "true" / "last" for the
    newest ``checkpoint-*`` in ``output_dir`` (a fresh start when there is none yet).
    """
    from transformers.trainer_utils import get_last_checkpoint

    if resume in (None, False, "", "false", "False"):
        return None
    if resume in (True, "true", "True", "last"):
        last = get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None
        if last is None:
            logger.info("no checkpoint in %s yet: starting from the beginning", output_dir)
        return last
    if not Path(resume).is_dir():
        raise ValueError(f"resume_from_checkpoint={resume!r} is not a checkpoint directory")
    return str(resume)


def stage_done(output_dir: str | os.PathLike) -> bool:
    """Whether a stage already finished and saved its final model into ``output_dir``."""
    return (Path(output_dir) / DONE_FILE).is_file()


def train_once(build_trainer: Callable[[], Any], output_dir: str | os.PathLike, resume_from_checkpoint: Any, *,
               skip_finished: bool = True, details: Callable[[Any, Any, Any], dict] | None = None) -> dict:
    """Build a trainer, train it into ``output_dir`` and save the final model (or adapter) there.

    Args:
        build_trainer: makes the trainer; not called when the training is skipped.
        resume_from_checkpoint: the config's value (see ``resume_point``).
        skip_finished: return the recorded info of a run that finished before (``training_done.json``)
            instead of training again.
        details: ``(trainer, train_output, resumed_from) -> dict`` of extra figures for the done file.

    Returns:
        ``{"output_dir", "global_step", "train_runtime_s", **details}``, also written to ``training_done.json``.
    """
    out = Path(output_dir)
    resume = resume_point(out, resume_from_checkpoint)
    if skip_finished and stage_done(out):
        logger.info("%s already finished (%s): skipping its training", out, DONE_FILE)
        return json.loads((out / DONE_FILE).read_text(encoding="utf-8"))
    trainer = build_trainer()
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - start
    trainer.save_model(str(out))
    info = {"output_dir": str(out), "global_step": trainer.state.global_step, "train_runtime_s": wall,
            **(details(trainer, result, resume) if details else {})}
    if trainer.accelerator.is_main_process:
        # the saved model is safetensors + JSON: transformers' pickled copy of the arguments is dropped
        # (``stage_config.json`` holds them; ``checkpoint-*`` folders keep theirs, which resuming needs)
        (out / TRAINING_ARGS_PICKLE).unlink(missing_ok=True)
        write_json(out / DONE_FILE, info)
    trainer.accelerator.wait_for_everyone()
    finish_wandb(trainer.args)
    release(trainer)
    return info


def release(trainer: Any) -> None:
    """Free the trainer (and its colocated vLLM engine) before the next stage or the evaluation.

    Accelerate's shared state is reset too (the process group stays): under DeepSpeed the next
    stage's trainer builds an ``Accelerator`` with its own DeepSpeed plugin, which accelerate refuses
    while the first one's state lives ("cannot pass in a `deepspeed_plugin` when creating a second
    `Accelerator`").
    """
    from accelerate.state import AcceleratorState, GradientState

    generation = getattr(trainer, "vllm_generation", None)
    if generation is not None and getattr(generation, "llm", None) is not None:
        del generation.llm
    del trainer
    gc.collect()
    AcceleratorState._reset_state()
    GradientState._reset_state()
