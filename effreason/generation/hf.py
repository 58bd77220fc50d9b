"""Batched generation with transformers ``generate``.

Prompts are sorted by length so each batch pads little, generated in batches, and returned in the
original order. Works on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteriaList

from effreason.format import count_completion_tokens
from effreason.generation.types import Generation


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return [eos] if isinstance(eos, int) else list(eos)


@torch.inference_mode()
def generate_hf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    show_progress: bool = False,
    logits_processor: Sequence | None = None,
    stopping_criteria: Sequence | None = None,
    batch_criteria: Callable[[list[int], int], Any] | None = None,
) -> list[Generation]:
    """Generate one completion per prompt (already tokenized, chat template applied).

    Args:
        prompt_ids: token ids of each prompt.
        max_new_tokens: cap on generated tokens per completion.
        batch_size: prompts per ``generate`` call.
        do_sample / temperature / top_p: sampling settings (greedy by default).
        logits_processor / stopping_criteria: extra transformers ``LogitsProcessor`` / ``StoppingCriteria``
            objects (generation-time methods, see ``effreason.generation.methods``).
        batch_criteria: ``(prompt indices of the batch's rows, prompt width) -> StoppingCriteria`` made
            afresh for each batch (short-m@k's per-row stops); it may cut rows with ``stopped_at``.
    """
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    device = model.device
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    results: list[Generation | None] = [None] * len(prompt_ids)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {"do_sample": False}
    if logits_processor:
        sampling["logits_processor"] = LogitsProcessorList(logits_processor)
    if stopping_criteria:
        sampling["stopping_criteria"] = StoppingCriteriaList(stopping_criteria)
    bar = tqdm(total=len(order), desc="generate", unit="prompt", disable=not show_progress)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(prompt_ids[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)  # (B, T) left-padded
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            ids = list(prompt_ids[i])
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        per_batch = {}
        criterion = batch_criteria(idx, width) if batch_criteria is not None else None
        if criterion is not None:
            per_batch["stopping_criteria"] = StoppingCriteriaList([*(stopping_criteria or []), criterion])
        out = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad, **{**sampling, **per_batch},
        )
        for row, i in enumerate(idx):
            new = out[row, width:].tolist()
            n = count_completion_tokens(new, eos, pad)
            finished = n > 0 and new[n - 1] in eos
            cut = getattr(criterion, "stopped_at", {}).get(row)
            if cut is not None:  # stopped by the criterion: its tokens end there (padding may equal eos)
                n, finished = cut, False
            text = tokenizer.decode(new[:n], skip_special_tokens=True)
            results[i] = Generation(text=text, num_tokens=n, finished=finished, token_ids=new[:n])
        bar.update(len(idx))
    bar.close()
    return results  # type: ignore[return-value]
