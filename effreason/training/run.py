"""Run an RL recipe: build the trainer from config, train (resumable), save, evaluate, compare.

The recipes in ``recipes/`` are thin: they parse the config (``effreason.training.args``), pick the
rewards and data of their method, and call ``train_stage`` and ``evaluate_and_compare`` here.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from effreason.jsonl import atomic_write, write_json

logger = logging.getLogger(__name__)

DONE_FILE = "training_done.json"
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


def configure_wandb(grpo_args: Any) -> None:
    """With wandb in ``report_to`` and no credentials, log offline (``WANDB_MODE=offline``) instead of prompting."""
    report_to = grpo_args.report_to or []
    if "wandb" not in report_to and report_to != "all":
        return
    os.environ.setdefault("WANDB_DIR", str(Path(grpo_args.output_dir)))  # wandb/ next to the checkpoints
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="replace"):
        return
    os.environ["WANDB_MODE"] = "offline"
    logger.info("wandb: no credentials found, logging offline (sync later with `wandb sync`)")


def policy_path(model_args: Any, adapter: str | None, merged_dir: Path) -> str:
    """The policy checkpoint to train: the model path (``lab`` resolved), or the model with ``adapter``
    merged in and saved to ``merged_dir`` (stage 2 after a LoRA stage 1)."""
    from effreason.models import load_model_and_tokenizer, resolve_model_path

    if adapter is None:
        return resolve_model_path(model_args.model_name_or_path)
    if not (merged_dir / "config.json").is_file():
        model, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, adapter=adapter,
                                                    dtype=model_args.dtype, device="cpu")
        model.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
    return str(merged_dir)


def build_trainer(grpo_args: Any, model_args: Any, recipe: Any, train_dataset: Any, reward_specs: list,
                  model_path: str) -> Any:
    """An ``EfficientGRPOTrainer`` with the rewards built from ``reward_specs`` (weights into the config)."""
    from trl import get_peft_config

    from effreason.models import load_tokenizer
    from effreason.rewards import build_rewards
    from effreason.training.grpo import EfficientGRPOTrainer, vllm_dtype

    funcs, weights = build_rewards(reward_specs, context={
        "num_generations": grpo_args.num_generations,
        "max_completion_tokens": grpo_args.max_completion_length,
    })
    grpo_args.reward_weights = weights
    grpo_args.model_init_kwargs = {**(grpo_args.model_init_kwargs or {}), "dtype": model_args.dtype or "auto"}
    tokenizer = load_tokenizer(model_path)
    with vllm_dtype(recipe.vllm_dtype if grpo_args.use_vllm else None):
        trainer = EfficientGRPOTrainer(
            model=model_path, reward_funcs=funcs, args=grpo_args, train_dataset=train_dataset,
            processing_class=tokenizer, peft_config=get_peft_config(model_args),
            dynamic_sampling=recipe.dynamic_sampling,
        )
    trainer.add_callback(JsonlLogCallback(Path(grpo_args.output_dir) / LOG_FILE))
    return trainer


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


def train_stage(grpo_args: Any, model_args: Any, recipe: Any, train_dataset: Any, reward_specs: list,
                adapter: str | None = None) -> dict:
    """Train one GRPO stage into ``grpo_args.output_dir`` and save the final model (or adapter) there.

    A stage that finished before (``training_done.json``) is skipped when resuming.

    Returns:
        ``{"output_dir", "global_step", "train_runtime_s", "steps_per_s"}``.
    """
    out = Path(grpo_args.output_dir)
    resume = resume_point(out, grpo_args.resume_from_checkpoint)
    if grpo_args.resume_from_checkpoint and stage_done(out):
        logger.info("%s already finished: skipping its training", out)
        return json.loads((out / DONE_FILE).read_text(encoding="utf-8"))
    from accelerate import PartialState

    with PartialState().main_process_first():  # the main process writes derived start models once
        model_path = policy_path(model_args, adapter, out / "start_merged")
        if recipe.reinit_embeddings:
            from effreason.training.embeddings import with_reinit_embeddings

            model_path = with_reinit_embeddings(model_path, recipe.reinit_embeddings,
                                                str(out / "start_reinit"), seed=grpo_args.seed)
    trainer = build_trainer(grpo_args, model_args, recipe, train_dataset, reward_specs, model_path)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - start
    trainer.save_model(str(out))
    info = {"output_dir": str(out), "global_step": trainer.state.global_step, "train_runtime_s": wall,
            "steps_per_s": result.metrics.get("train_steps_per_second"), "resumed_from": resume,
            "peft": bool(model_args.use_peft), "policy_path": model_path}
    if trainer.accelerator.is_main_process:
        write_json(out / DONE_FILE, info)
    trainer.accelerator.wait_for_everyone()
    _release(trainer)
    return info


def _release(trainer: Any) -> None:
    """Free the trainer (and its colocated vLLM engine) before the next stage or the evaluation."""
    generation = getattr(trainer, "vllm_generation", None)
    if generation is not None and getattr(generation, "llm", None) is not None:
        del generation.llm
    del trainer
    gc.collect()


#: Settings TRL derives other settings from at construction: the same for every stage of a run.
SHARED_STAGE_KEYS = ("per_device_train_batch_size", "num_generations", "steps_per_generation",
                     "generation_batch_size", "gradient_accumulation_steps", "use_vllm", "vllm_mode")


def stage_args(grpo_args: Any, recipe: Any, overrides: dict, output_dir: str) -> tuple[Any, Any]:
    """Copies of the GRPO config and recipe arguments with a stage's overrides applied.

    Raises:
        ValueError: an unknown key, or a batch-layout key (``SHARED_STAGE_KEYS``) that must be the
            same in every stage.
    """
    from effreason.training.args import check_overrides

    check_overrides("stage overrides", overrides, [grpo_args, recipe])
    shared = sorted(set(overrides) & set(SHARED_STAGE_KEYS))
    if shared:
        raise ValueError(f"stage overrides cannot change {shared}: set them once, at the top level of the config")
    grpo = copy.deepcopy(grpo_args)
    grpo.output_dir = output_dir
    recipe_keys = {}
    for key, value in overrides.items():
        if hasattr(grpo, key):
            setattr(grpo, key, value)
        else:
            recipe_keys[key] = value
    return grpo, replace(recipe, **recipe_keys)


def evaluate(recipe: Any, out_dir: Path, name: str, model: str, adapter: str | None = None,
             instruction: str | None = None) -> dict:
    """Evaluate one model on the recipe's eval benchmark into ``out_dir/eval/<name>`` (resumable)."""
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.runner import run_eval
    from effreason.evaluation.store import ConfigMismatchError

    cfg = EvalConfig(output=str(out_dir / "eval" / name), benchmark=recipe.eval_benchmark,
                     split=recipe.eval_split, limit=recipe.eval_limit, data_dir=recipe.data_dir,
                     model=model, adapter=adapter, instruction=instruction, backend=recipe.eval_backend,
                     max_new_tokens=recipe.eval_max_new_tokens, batch_size=recipe.eval_batch_size,
                     progress=False)
    try:
        results = run_eval(cfg)  # resumes an interrupted evaluation of the same weights
    except ConfigMismatchError:
        logger.info("%s holds an evaluation of other weights or settings: evaluating again", cfg.output)
        results = run_eval(replace(cfg, overwrite=True))
    logger.info("eval %s: accuracy %.3f, tokens mean %.1f (%s)", name, results["accuracy"],
                results.get("tokens_mean") or float("nan"), cfg.output)
    return results


def write_comparison(out_dir: Path, runs: dict[str, dict], baseline: str, title: str) -> str:
    """Write ``comparison.md`` / ``.json`` / ``.png`` into ``out_dir``; return the markdown table."""
    from effreason.evaluation.compare import comparison_rows, markdown_table, plot_runs

    rows = comparison_rows(runs, baseline=baseline)
    table = markdown_table(rows)
    with atomic_write(out_dir / "comparison.md") as f:
        f.write(f"# {title}\n\n{table}\n")
    write_json(out_dir / "comparison.json", rows)
    plot_runs(runs, out_dir / "comparison.png", baseline=baseline, title=title)
    return table
