"""Builders of an RL stage: its rewards, its start checkpoint and its ``EfficientGRPOTrainer``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from effreason.training.tracking import LOG_FILE, JsonlLogCallback

logger = logging.getLogger(__name__)


def build_stage_rewards(specs: list, grpo_args: Any, where: str) -> tuple[list[Callable], list[float]]:
    """The reward functions and weights of a stage, for its batch layout (``num_generations``, cap).

    Raises:
        ValueError: a bad reward spec (``effreason.rewards.build_rewards``), prefixed with ``where``.
    """
    from effreason.rewards import build_rewards

    try:
        return build_rewards(specs, context={"num_generations": grpo_args.num_generations,
                                             "max_completion_tokens": grpo_args.max_completion_length})
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


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


def build_grpo_trainer(grpo_args: Any, model_args: Any, train_dataset: Any, reward_funcs: list[Callable],
                       reward_weights: list[float], *, adapter: str | None = None,
                       reinit_embeddings: Sequence[str] = (), dynamic_sampling: bool = False,
                       vllm_dtype: str | None = None, train_adapter: str | None = None) -> Any:
    """An ``EfficientGRPOTrainer`` for one stage, logging to ``<output_dir>/train_log.jsonl``.

    The policy starts from ``model_args.model_name_or_path`` (with ``adapter`` merged in, and the
    ``reinit_embeddings`` words' embeddings re-drawn: both saved once under ``output_dir``).
    ``train_adapter``: a LoRA adapter folder whose weights RL trains further, the base frozen (the reasoning
    adapter's stage 2; ``model_args``' own LoRA settings are then unused). ``grpo_args`` receives the reward
    weights and the model dtype.
    """
    from accelerate import PartialState
    from trl import get_peft_config

    from effreason.models import load_tokenizer
    from effreason.training.grpo import EfficientGRPOTrainer
    from effreason.training.grpo import vllm_dtype as vllm_dtype_context

    out = Path(grpo_args.output_dir)
    with PartialState().main_process_first():  # the main process writes derived start models once
        model_path = policy_path(model_args, adapter, out / "start_merged")
        if reinit_embeddings:
            from effreason.training.embeddings import with_reinit_embeddings

            model_path = with_reinit_embeddings(model_path, reinit_embeddings, str(out / "start_reinit"),
                                                seed=grpo_args.seed)
    grpo_args.reward_weights = reward_weights
    grpo_args.model_init_kwargs = {**(grpo_args.model_init_kwargs or {}), "dtype": model_args.dtype or "auto"}
    tokenizer = load_tokenizer(model_path)
    policy, peft_config = model_path, get_peft_config(model_args)
    if train_adapter is not None:
        policy, peft_config = trainable_adapter_model(model_path, train_adapter, model_args.dtype), None
        grpo_args.model_init_kwargs = None  # the model is built here
    with vllm_dtype_context(vllm_dtype if grpo_args.use_vllm else None):
        trainer = EfficientGRPOTrainer(
            model=policy, reward_funcs=reward_funcs, args=grpo_args, train_dataset=train_dataset,
            processing_class=tokenizer, peft_config=peft_config, dynamic_sampling=dynamic_sampling,
        )
    trainer.add_callback(JsonlLogCallback(out / LOG_FILE))
    # recorded in training_done.json (grpo_details): what the stage started from
    trainer.start_info = {"peft": bool(model_args.use_peft or train_adapter), "policy_path": model_path,
                          **({"start_adapter": str(train_adapter)} if train_adapter else {})}
    return trainer


def trainable_adapter_model(model_path: str, adapter: str, dtype: str | None) -> Any:
    """The base model with ``adapter`` loaded trainable: only the LoRA weights get gradients."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype) if dtype and dtype != "auto"
                                                 else "auto")
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)


def grpo_details(trainer: Any, result: Any, resumed_from: Any) -> dict:
    """A GRPO stage's figures for ``training_done.json`` (``train_once(details=...)``)."""
    return {"steps_per_s": result.metrics.get("train_steps_per_second"), "resumed_from": resumed_from,
            **trainer.start_info}


def trained_policy(info: dict, start: str) -> tuple[str, str | None]:
    """``(model, adapter)`` a finished stage left: its weights, or its start checkpoint plus its adapter."""
    if info.get("peft"):
        return info.get("policy_path", start), info["output_dir"]
    return info["output_dir"], None
