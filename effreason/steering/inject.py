"""Adding ``gamma * v`` to the residual stream at one layer, on transformers models.

The vector is added to the output of the module that ``effreason.hidden`` reads layer ``l`` from
(the embeddings for 0, else decoder block ``l - 1``), so it is injected at exactly the point it was
extracted from. ASC's reference reads ``hidden_states[L]`` and hooks ``layers[L]`` (whose output is
``hidden_states[L + 1]``): one layer off (``../shared/docs/METHODS.md`` section 5).

Which positions. While generating (``steer``), a forward over more than one position is a prefill:
the vector goes on its last position (the last prompt token; prompts are left-padded in batches);
a forward over one position is a decoding step, and the vector goes on it. So every generated token,
and the last prompt token, is produced from a steered state, and the earlier prompt positions are
not (ASC injects at position -1 of every forward). A forward over whole sequences (teacher forcing,
the KL measurement) passes ``start``: per row, the first position that gets the vector.

A continuation from token ids (budget forcing) is a new prefill: its earlier completion tokens are
not steered again, so its cache differs from an uninterrupted steered run's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

from effreason.hidden import layer_module


def _add(output: Any, delta: torch.Tensor, start: torch.Tensor | None) -> Any:
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    if delta.dtype != hidden.dtype or delta.device != hidden.device:
        delta = delta.to(device=hidden.device, dtype=hidden.dtype)
    if start is not None:  # (B,) first steered position per row
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        mask = (positions[None, :] >= start.to(hidden.device)[:, None]).to(hidden.dtype)
        hidden = hidden + mask[..., None] * delta
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        return [hidden, *output[1:]] if isinstance(output, list) else hidden
    # generation: in place on the block's fresh output (no copy per step), which the next block reads
    if hidden.shape[1] == 1:
        hidden.add_(delta)
    else:
        hidden[:, -1, :].add_(delta)
    return output


@contextlib.contextmanager
def steer(model: Any, vector: torch.Tensor, layer: int, gamma: float, *,
          start: torch.Tensor | None = None, timing: dict | None = None) -> Iterator[None]:
    """Add ``gamma * vector`` at ``layer`` during the forwards run inside the block (the hook is removed after).

    Args:
        vector: ``(hidden_size,)``.
        layer: ``effreason.hidden`` index (0 = embeddings, ``i`` = after decoder block ``i``).
        start: ``(B,)`` first steered position per row for full-sequence forwards; ``None`` for generation
            (the last position of a prefill, and every decoding step).
        timing: if given, ``timing["hook_s"]`` accumulates the seconds spent adding the vector (benchmarks).
    """
    delta = float(gamma) * vector.detach().float()
    try:  # cast once, to the model's dtype and device
        param = next(model.parameters())
        delta = delta.to(device=param.device, dtype=param.dtype)
    except StopIteration:
        pass
    if timing is None:
        def hook(_module, _inputs, output):
            return _add(output, delta, start)
    else:
        timing.setdefault("hook_s", 0.0)

        sync = torch.cuda.synchronize if delta.is_cuda else (lambda: None)  # GPU kernels run asynchronously

        def hook(_module, _inputs, output):
            sync()
            tic = time.perf_counter()
            out = _add(output, delta, start)
            sync()
            timing["hook_s"] += time.perf_counter() - tic
            return out
    handle = layer_module(model, layer).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class SteeredModel:
    """A transformers model that generates with a steering vector: ``generate`` and calls run inside ``steer``.

    Everything else (``device``, ``config``, ``generation_config``, ...) is the wrapped model's, so
    it stands in for the model in ``effreason.generation.hf.generate_hf`` and the methods' samplers.
    """

    def __init__(self, model: Any, vector: torch.Tensor, layer: int, gamma: float):
        self.steered_model, self.vector, self.layer, self.gamma = model, vector, layer, gamma
        self.timing: dict | None = None  # a dict: the hook's own seconds accumulate in timing["hook_s"]

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with steer(self.steered_model, self.vector, self.layer, self.gamma, timing=self.timing):
            return self.steered_model.generate(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with steer(self.steered_model, self.vector, self.layer, self.gamma, timing=self.timing):
            return self.steered_model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.steered_model, name)
