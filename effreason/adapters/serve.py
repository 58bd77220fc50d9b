"""Python API: a base model, its reasoning adapter and router, served together on HF or vLLM.

    from effreason.adapters.serve import RoutedModel
    rm = RoutedModel("lab_base", "runs/lora-adapter-lab/adapter", "runs/lora-adapter-lab/router", backend="vllm")
    out = rm.generate([[{"role": "user", "content": "start 3 ; s1 + 4 ; ( mod 11 )"}]], max_new_tokens=384)
    out[0].text, out[0].route        # "the answer is \\boxed{ 7 }", "base"
    rm.close()

The same code path as ``effreason eval --adapter DIR --router DIR [--bucket NAME]`` (the ``adapter_router``
generation method): the router reads the base's state at the end of each prompt, then the base alone or
base + adapter generates (HF: PEFT with the adapter disabled for base-routed prompts; vLLM: one engine, the
adapter's ``LoRARequest`` on the adapter-routed ones). The adapter and router are checked against the base
model before anything loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Routed:
    """One completion and how it was made: ``route`` ("base" or "adapter"), the router's score, the bucket."""

    text: str
    token_ids: list[int]
    route: str
    info: dict


class RoutedModel:
    """Base + reasoning adapter + router on one backend (see the module docstring).

    Args:
        router: the router folder, or ``None`` (every prompt to the adapter).
        bucket: a length bucket the adapter was trained with (its instruction is appended to adapter prompts).
        backend: ``"hf"`` or ``"vllm"``; ``max_model_len``: vLLM's context (prompt + completion).
    """

    def __init__(self, base: str, adapter: str, router: str | None = None, *, bucket: str | None = None,
                 backend: str = "hf", temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 dtype: str | None = None, max_model_len: int | None = 1024) -> None:
        from effreason.adapters.method import METHOD
        from effreason.generation.backends import Sampling, build_backend
        from effreason.models import check_model_source, load_tokenizer, resolve_model_path

        check_model_source(base, "base model")
        check_model_source(adapter, "adapter", adapter=True)
        settings = {**({"router": router} if router else {}), **({"bucket": bucket} if bucket else {})}
        self.settings = settings
        if settings:
            METHOD.check_settings(settings, samples=1)
            METHOD.check_model_source(settings, base, adapter, load_tokenizer(resolve_model_path(base)))
        methods = {"adapter_router": settings} if settings else {}
        self.backend = build_backend(backend, base, sampling=Sampling(temperature, top_p, seed), adapter=adapter,
                                     dtype=dtype, methods=methods, max_model_len=max_model_len)
        self._sample = METHOD.sampler(self.backend, settings) if settings else None

    def generate(self, messages: Sequence[list[dict]], *, max_new_tokens: int = 1024,
                 seeds: Sequence[int] | None = None) -> list[Routed]:
        """One completion per conversation (chat messages, the generation prompt added)."""
        from effreason.format import render_prompt

        tok = self.backend.tokenizer
        ids = [render_prompt(tok, list(m))[1] for m in messages]
        seeds = list(seeds) if seeds is not None else [0] * len(ids)
        if self._sample is None:
            gens = self.backend.generate(ids, n=1, max_new_tokens=max_new_tokens, seeds=seeds)
            return [Routed(g[0].text, list(g[0].token_ids), "adapter", {"route": "adapter"}) for g in gens]
        drawn = self._sample(ids, 1, max_new_tokens, seeds, messages=[list(m) for m in messages],
                             render=lambda m: render_prompt(tok, m)[1])
        return [Routed(g.text, list(g.token_ids), info["route"], info) for (g, info, _), in drawn]

    @property
    def router_seconds(self) -> float:
        """Seconds the router has spent so far (its features and scores)."""
        return float(getattr(self._sample, "timing", {}).get("router_s", 0.0)) if self._sample else 0.0

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> RoutedModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
