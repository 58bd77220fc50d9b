"""Resolve and load causal LMs: hub ids, local paths, the shipped lab model, LoRA adapters."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: The shipped overthinker (rebuild it with ``effreason lab bootstrap --out effreason/lab/checkpoint``).
LAB_MODEL_DIR = Path(__file__).parent / "lab" / "checkpoint"

_ALIASES = {"lab": LAB_MODEL_DIR}


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Map an alias (``lab``) to its directory; pass local paths and hub ids through."""
    key = str(name_or_path)
    if key in _ALIASES:
        path = _ALIASES[key]
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"the {key!r} model is missing at {path}; rebuild it with "
                f"`effreason lab bootstrap --out {path}`"
            )
        return str(path)
    return key


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer, left-padded for batched generation, with a pad token."""
    tok = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@contextlib.contextmanager
def outside_zero3() -> Iterator[None]:
    """Load and run whole models in a process that a DeepSpeed ZeRO-3 trainer set up.

    While a ZeRO-3 ``TrainingArguments`` lives, transformers builds every ``from_pretrained`` model
    partitioned (``deepspeed.zero.Init``: empty weights outside the engine, "'weight' must be 2-D")
    and makes ``generate`` wait for the other ranks (``synced_gpus``). Evaluation and adapter merging
    run in the main process alone, on whole weights. A no-op without DeepSpeed.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (alias, path or hub id) and its tokenizer, optionally with a LoRA adapter.

    Args:
        adapter: path of a PEFT adapter to apply (merged into the weights for fast generation).
        dtype: ``"float32"``, ``"bfloat16"``, ... or a torch dtype; default float32 on CPU, bf16 on CUDA.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
    """
    path = resolve_model_path(name_or_path)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    tokenizer = load_tokenizer(path)
    with outside_zero3():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            logger.info("merged adapter %s into %s", adapter, path)
    model.to(device).eval()
    return model, tokenizer
