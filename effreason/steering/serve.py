"""Serving with a steering vector: a steered transformers model, or a vLLM engine running the steered model.

    from effreason.steering.serve import steered_hf, steered_vllm

    model = steered_hf("runs/steering-lab/steering", "lab")          # transformers: model.generate(...) is steered
    llm = steered_vllm("runs/steering-lab/steering", "lab")          # vllm.LLM: llm.generate(...) is steered
    llm = steered_vllm(folder, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", gamma=0.8, gpu_memory_utilization=0.5)

Both check that the vector was extracted from that model (weights, adapter, tokenizer, shape) and use
the recipe's strength unless ``gamma`` is given. On vLLM the strength is fixed for the engine (start
another for another strength), the engine runs eagerly, without prefix caching or chunked prefill
(``effreason.steering.vllm_plugin``), and effreason must be installed in the environment (``pip install
-e .``) so that vLLM finds the plugin in its worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _checked(folder: str | Path, model: str, tokenizer: Any, adapter: str | None = None) -> Any:
    """The folder's vector, refused unless it was extracted from ``model`` (+ ``adapter``)."""
    from effreason.steering.method import METHOD, load_vector

    settings = {"vector": str(folder)}
    METHOD.check_model_source(settings, model, adapter, tokenizer)
    return load_vector(settings)


def steered_hf(folder: str | Path, model: str, *, gamma: float | None = None, adapter: str | None = None,
               dtype: str | None = None, device: str | None = None) -> Any:
    """Load ``model`` (+ ``adapter``) with transformers and return it wrapped so that ``generate`` is steered.

    Returns:
        an ``effreason.steering.inject.SteeredModel`` (its ``.tokenizer`` is the model's tokenizer).
    """
    from effreason.models import load_model_and_tokenizer, load_tokenizer
    from effreason.steering.inject import SteeredModel

    vec = _checked(folder, model, load_tokenizer(model), adapter)
    hf_model, tokenizer = load_model_and_tokenizer(model, adapter=adapter, dtype=dtype, device=device)
    steered = SteeredModel(hf_model, vec.vector, vec.layer, vec.gamma if gamma is None else float(gamma))
    steered.tokenizer = tokenizer
    return steered


def steered_vllm(folder: str | Path, model: str, *, gamma: float | None = None, **llm_kwargs: Any) -> Any:
    """A ``vllm.LLM`` whose model adds the vector (``llm_kwargs`` go to ``vllm.LLM``: dtype, max_model_len, ...)."""
    from effreason.generation.vllm import load_vllm
    from effreason.models import load_tokenizer, resolve_model_path
    from effreason.steering.method import METHOD

    _checked(folder, model, load_tokenizer(model))
    settings = {"vector": str(folder), **({"gamma": float(gamma)} if gamma is not None else {})}
    path = resolve_model_path(model)
    return load_vllm(path, **{**llm_kwargs, **METHOD.vllm_engine(settings, path)})
