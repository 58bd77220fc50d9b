"""Give tokens a model has never read distinct input embeddings before RL teaches it to read them.

Why: a model trained from scratch on a fixed vocabulary (the lab) never sees some tokens as input.
With tied input / output embeddings, training only pushes such rows towards one shared "never
predict this" direction; in the shipped lab model the rows of ``level``, ``short``, ``medium`` and
``long`` have pairwise cosine similarity ~0.86, so a prompt's length level is nearly invisible to the
model and TLDR cannot teach it to obey the level (measured: all levels drifted to the same length).
Re-drawing those rows as independent random vectors (the model's own init scale) makes the tokens
distinguishable; RL then learns what they mean. Pretrained LLMs do not need this.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)


def reinit_token_embeddings(model: Any, tokenizer: Any, words: Sequence[str], seed: int = 0) -> list[int]:
    """Re-draw the input embedding rows of ``words`` (each must be one token) from N(0, init_range^2).

    With tied input / output embeddings (the lab model) the output rows change with them.

    Returns:
        The token ids changed.

    Raises:
        ValueError: a word that is not exactly one token of ``tokenizer``.
    """
    ids = []
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1 or tokens[0] == tokenizer.unk_token_id:
            raise ValueError(f"reinit_embeddings: {word!r} is not a single known token of the tokenizer "
                             f"(it encodes to {tokens}); list single tokens only")
        ids.append(tokens[0])
    std = float(getattr(model.config, "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(seed)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        fresh = torch.randn(len(ids), weight.shape[1], generator=generator) * std
        weight[ids] = fresh.to(weight.dtype)
    logger.info("re-drew the input embeddings of %s (std %.3g)", list(words), std)
    return ids


def with_reinit_embeddings(model_path: str, words: Sequence[str], out_dir: str, seed: int = 0) -> str:
    """Save a copy of ``model_path`` with ``words``' embeddings re-drawn into ``out_dir``; return it."""
    from pathlib import Path

    from effreason.models import load_model_and_tokenizer

    if (Path(out_dir) / "config.json").is_file():
        return out_dir
    model, tokenizer = load_model_and_tokenizer(model_path, device="cpu")
    reinit_token_embeddings(model, tokenizer, words, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
