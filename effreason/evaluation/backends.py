"""The two generation backends of ``effreason eval`` behind one small interface.

``HFBackend`` runs transformers ``generate`` in length-sorted batches (CPU or GPU) and is the one that
takes generation-time methods; ``VLLMBackend`` runs ``LLM.generate`` with ``n`` samples per prompt and
LoRA adapters through ``LoRARequest``. Both return, per prompt, its samples in order.

Sampling seeds. HF draws from torch's global generator, so the runner seeds it per chunk; vLLM takes
one seed per prompt (the problem's index plus the run seed), so its samples do not depend on batching.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from effreason.evaluation.methods import GenerationHooks, apply_methods
from effreason.generation.hf import generate_hf
from effreason.generation.types import Generation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by both backends (``temperature == 0`` is greedy)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Backend(Protocol):
    """What the runner needs from a backend."""

    name: str
    tokenizer: Any

    def generate(self, prompt_ids: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                 seeds: Sequence[int]) -> list[list[Generation]]:
        """``n`` completions per prompt; ``seeds`` has one seed per prompt (used where the backend can)."""

    def close(self) -> None:
        """Release the model (engine processes, memory)."""


class HFBackend:
    """transformers ``generate`` (batched, prompts sorted by length)."""

    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, sampling: Sampling, *, batch_size: int = 64,
                 methods: dict[str, dict] | None = None):
        self.tokenizer, self.sampling, self.batch_size = tokenizer, sampling, batch_size
        self.hooks = apply_methods(GenerationHooks(model=model), tokenizer, methods or {})

    def generate(self, prompt_ids: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                 seeds: Sequence[int]) -> list[list[Generation]]:
        if not self.sampling.greedy:
            torch.manual_seed(seeds[0] if seeds else self.sampling.seed)
        repeated = [ids for ids in prompt_ids for _ in range(n)]  # (P*n,) prompt-major
        gens = generate_hf(
            self.hooks.model, self.tokenizer, repeated, max_new_tokens=max_new_tokens, batch_size=self.batch_size,
            do_sample=not self.sampling.greedy, temperature=self.sampling.temperature or 1.0,
            top_p=self.sampling.top_p, logits_processor=self.hooks.logits_processors,
            stopping_criteria=self.hooks.stopping_criteria,
        )
        return [gens[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def close(self) -> None:
        pass


class VLLMBackend:
    """vLLM ``LLM.generate`` (imported lazily; see ``effreason.generation.vllm``)."""

    name = "vllm"

    def __init__(self, model_path: str, tokenizer: Any, sampling: Sampling, *, adapter: str | None = None,
                 dtype: str | None = None, max_model_len: int | None = None, **engine_kwargs: Any):
        from effreason.generation import vllm as vllm_gen

        self._gen = vllm_gen
        self.tokenizer, self.sampling = tokenizer, sampling
        self.llm = vllm_gen.load_vllm(model_path, dtype=dtype, max_model_len=max_model_len, seed=sampling.seed,
                                      enable_lora=adapter is not None, **engine_kwargs)
        self.lora = vllm_gen.lora_request(adapter) if adapter else None

    def generate(self, prompt_ids: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                 seeds: Sequence[int]) -> list[list[Generation]]:
        return self._gen.generate_vllm(
            self.llm, self.tokenizer, prompt_ids, max_new_tokens=max_new_tokens, n=n,
            temperature=self.sampling.temperature, top_p=self.sampling.top_p,
            seeds=None if self.sampling.greedy else seeds, lora=self.lora,
        )

    def close(self) -> None:
        """Stop the engine's worker processes now rather than at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


def build_backend(name: str, model: str, *, sampling: Sampling, adapter: str | None = None, dtype: str | None = None,
                  device: str | None = None, batch_size: int = 64, methods: dict[str, dict] | None = None,
                  max_model_len: int | None = None) -> Backend:
    """Load the model for a backend (``"hf"`` or ``"vllm"``)."""
    from effreason.models import load_model_and_tokenizer, load_tokenizer, resolve_model_path

    if name == "hf":
        model_obj, tokenizer = load_model_and_tokenizer(model, adapter=adapter, dtype=dtype, device=device)
        return HFBackend(model_obj, tokenizer, sampling, batch_size=batch_size, methods=methods)
    if name == "vllm":
        if device not in (None, "cuda", "cpu"):
            logger.warning("--device %s is ignored by the vllm backend (it picks its own device)", device)
        path = resolve_model_path(model)
        if max_model_len is not None:  # vLLM refuses a context longer than the model's positions
            from transformers import AutoConfig

            positions = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
            max_model_len = min(max_model_len, positions) if positions else max_model_len
        return VLLMBackend(path, load_tokenizer(path), sampling, adapter=adapter, dtype=dtype,
                           max_model_len=max_model_len)
    raise ValueError(f"unknown backend {name!r}; expected 'hf' or 'vllm'")
