"""The lab model: a real ``Qwen3ForCausalLM`` built from a config, small enough for a laptop CPU.

Why Qwen3 and not Qwen2: transformers 5 forces its own BPE ``Qwen2Tokenizer`` on every ``qwen2``
checkpoint (``MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS``), which would silently re-tokenize the
lab's word-level vocabulary with different ids. ``qwen3`` checkpoints keep the saved tokenizer.
""" 

from __future__ import annotations

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM


def lab_model_config(tokenizer: PreTrainedTokenizerBase, *, hidden_size: int = 128, num_layers: int = 3,
                     num_heads: int = 4, intermediate_size: int = 384,
                     initializer_range: float = 0.1) -> Qwen3Config:
    """Config of the overthinker. Head size 32 is one that vLLM's CPU attention supports
    (LAB-NOTES: 32, 64, 80, ... work; 8 fails).

    Size: 3 layers with a 384-wide MLP (0.71M parameters) learn the task as well as 4 with 512 (1.12M)
    did, at ~60% of the compute per token, which keeps ``effreason lab bootstrap`` within 10 minutes on
    2 cores with one thread as with two (``effreason lab bootstrap-grid``); width 96 did not learn it
    (dev accuracy 0.08 after the same schedule).

    ``initializer_range`` is 0.1, not the usual 0.02: at width 128 the small init leaves attention
    nearly uniform and training sat on a plateau (loss ~0.98 after 300 steps, the level of a model
    that cannot look steps up in the question) where 0.1 reached 0.45 in the same steps.
    """
    head_dim = hidden_size // num_heads
    if head_dim not in (32, 64, 80, 96, 112, 128, 256):
        raise ValueError(f"head size {head_dim} is not supported by vLLM's CPU attention; use 32 or 64")
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=head_dim,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=initializer_range,
        dtype="float32",
    )


def build_lab_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0, **config_kwargs) -> Qwen3ForCausalLM:
    """A freshly initialised lab model (deterministic for ``seed``)."""
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(lab_model_config(tokenizer, **config_kwargs))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        do_sample=False, max_new_tokens=256,
    )
    return model
