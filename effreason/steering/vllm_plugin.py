"""Steering vectors on vLLM: the plugin entry point and the engine settings that select the steered model.

vLLM has no steering API, but a plugin may register model architectures of its own. ``register`` (the
``vllm.general_plugins`` entry point ``effreason_steering`` in ``pyproject.toml``; vLLM calls it in every
process: the caller's, the engine core's and the workers') registers ``EffreasonSteered<Arch>`` for
Qwen3, Qwen2 (DeepSeek-R1-Distill-Qwen) and Llama causal LMs: the stock vLLM model plus a forward hook
that adds ``gamma * v`` to the residual stream at one layer (``effreason.steering.vllm_model``).
``engine_kwargs`` returns the ``vllm.LLM`` arguments that select it for one engine::

    llm = load_vllm(model_path, **engine_kwargs(model_path, "v.safetensors", layer=3, gamma=1.2))

Same layers and positions as the HF side (``effreason.steering.inject``): layer 0 is the embedding
output, ``i`` the output of decoder block ``i - 1``; the vector goes on the last prompt position of a
prefill and on the new position of every decoding step. The engine must schedule each prompt whole
(no chunked prefill), reuse no cached prefix (prefix caching off) and run the model eagerly (the hook
reads the batch layout of each step in Python); ``engine_kwargs`` sets all three, and the model refuses
to start without them. Not handled, so avoid them: speculative decoding and pipeline parallelism (the
model refuses both), preemption (a preempted request is recomputed as one prefill over prompt and
completion, steered at its last position only: give the engine enough KV cache for the batch) and
prompt embeddings instead of token ids at layer 0.

This module imports no vLLM at import time.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

#: Plugin entry point (group ``vllm.general_plugins``) declared in ``pyproject.toml``.
ENTRY_POINT = "effreason_steering"
PLUGIN_GROUP = "vllm.general_plugins"
#: Architectures we can wrap (vLLM class of the same name, decoder blocks returning ``(hidden, residual)``).
WRAPPED = ("Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM")
#: ``hf_config`` attribute (set through ``hf_overrides``) that the steered model reads its settings from.
CONFIG_KEY = "effreason_steering"
PREFIX = "EffreasonSteered"


def steered_arch(arch: str) -> str:
    """The registered name of the steered wrapper of a vLLM architecture."""
    return f"{PREFIX}{arch}"


def register() -> None:
    """Register the steered architectures with vLLM (idempotent; vLLM calls it once per process)."""
    from vllm import ModelRegistry

    for arch in WRAPPED:
        ModelRegistry.register_model(steered_arch(arch), f"effreason.steering.vllm_model:Steered{arch}")


def plugin_installed() -> bool:
    """Whether vLLM will find the plugin: the entry point is in this environment's package metadata."""
    return any(ep.name == ENTRY_POINT for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP))


def read_vector(vector_file: str | Path) -> Any:
    """The steering vector of a safetensors file: key ``vector``, a 1-D float tensor (returned as float32).

    Raises:
        ValueError: no such file, no ``vector`` key, or not 1-D.
    """
    from safetensors import safe_open

    path = Path(vector_file)
    if not path.is_file():
        raise ValueError(f"steering vector file {path} does not exist; save one with "
                         "safetensors.torch.save_file({'vector': v}, path)")
    with safe_open(str(path), framework="pt") as f:
        if "vector" not in f.keys():
            raise ValueError(f"{path} has no 'vector' tensor (keys: {sorted(f.keys())}); save it with "
                             "safetensors.torch.save_file({'vector': v}, path)")
        vector = f.get_tensor("vector")
    if vector.dim() != 1:
        raise ValueError(f"the steering vector in {path} has shape {tuple(vector.shape)}; expected (hidden_size,)")
    return vector.float()


def engine_kwargs(model_path: str, vector_file: str, layer: int, gamma: float) -> dict:
    """``vllm.LLM`` keyword arguments for an engine that adds ``gamma * v`` at ``layer`` (``effreason.hidden``
    convention) to every request. Pass them with the model path: ``load_vllm(model_path, **kwargs)`` or
    ``vllm.LLM(model=model_path, **kwargs)``.

    Raises:
        ValueError: the plugin's entry point is not installed, the architecture cannot be wrapped, the
            vector is unreadable or of the wrong size, or the layer is out of range.
    """
    from transformers import AutoConfig

    from effreason.models import resolve_model_path

    if not plugin_installed():
        raise ValueError(f"the vLLM plugin {ENTRY_POINT!r} is not installed in this environment (no "
                         f"{PLUGIN_GROUP} entry point); run `pip install -e .` in the effreason checkout")
    config = AutoConfig.from_pretrained(resolve_model_path(model_path))
    archs = list(getattr(config, "architectures", None) or [])
    if len(archs) != 1 or archs[0] not in WRAPPED:
        raise ValueError(f"cannot steer {model_path} on vLLM: its architecture {archs or 'is not named'} is not "
                         f"one of {list(WRAPPED)} (add a subclass in effreason/steering/vllm_model.py)")
    depth, hidden = int(config.num_hidden_layers), int(config.hidden_size)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= depth:
        raise ValueError(f"steering layer {layer!r} is outside 0..{depth} ({model_path} has {depth} layers; "
                         "0 = embeddings)")
    vector = read_vector(vector_file)
    if vector.numel() != hidden:
        raise ValueError(f"the steering vector in {vector_file} has {vector.numel()} entries; {model_path} has "
                         f"hidden_size {hidden}")
    return {
        "hf_overrides": {
            "architectures": [steered_arch(archs[0])],
            CONFIG_KEY: {"vector_file": str(Path(vector_file).resolve()), "layer": int(layer),
                         "gamma": float(gamma)},
        },
        # The hook indexes the batch's last query positions in Python at every step: no graph capture.
        "enforce_eager": True,
        # Steered prompt positions (the last one) must not be served to unsteered requests, nor the reverse.
        "enable_prefix_caching": False,
        # A prompt split over steps would be steered at the end of each chunk.
        "enable_chunked_prefill": False,
    }
