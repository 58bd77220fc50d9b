"""The residual stream of a causal LM by layer: which layers, read (and written) at the same modules.

Shared by the early-exit probes (features at cue tokens, ``effreason.early_exit``) and the steering
vectors (a direction read and injected at one layer, ``effreason.steering``).

Layer indices follow ``output_hidden_states``: 0 is the embedding output, ``i`` (1..L) the residual
stream after decoder block ``i``, so ``L`` is the last block. Both paths read them with forward hooks
on the same modules (the embedding layer, or decoder block ``i - 1``), so a feature is the same
vector whether it comes from one forward pass over a whole trace (training, replay, vLLM) or from a
decoding step (online exit on HF). Note that for ``L`` this is the stream *before* the model's final
norm, where ``hidden_states[L]`` of ``output_hidden_states`` has the norm applied in most models (the
probe standardises its inputs, so this changes nothing it can learn).

Layers may be named by fractions of the depth: ``resolve_layers(["1/3", "2/3", "last"], 28) == [9, 19, 28]``
(the early-exit default; LYNX reads 9, 16 and 28 of a 28-layer model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any

import torch


def num_layers(model: Any) -> int:
    """Decoder blocks of a causal LM."""
    config = model.config
    n = getattr(config, "num_hidden_layers", None) or getattr(getattr(config, "text_config", None),
                                                              "num_hidden_layers", None)
    if not n:
        raise ValueError(f"cannot tell how many layers {type(model).__name__} has (no num_hidden_layers in its config)")
    return int(n)


def model_shape(model_path: str) -> tuple[int | None, int | None]:
    """``(decoder blocks, hidden size)`` of a model folder or hub id from its config alone (no weights loaded)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path)
    config = getattr(config, "text_config", None) or config
    return getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)


def resolve_layers(layers: Sequence[int | str], depth: int) -> list[int]:
    """Layer indices (``output_hidden_states`` convention) from ints, fractions of the depth ("1/3") or "last".

    Raises:
        ValueError: an index outside 0..depth, a malformed entry, or a repeated layer.
    """
    out = []
    for item in layers:
        if isinstance(item, bool):
            raise ValueError(f"layer {item!r} is not an index, a fraction such as '1/3' or 'last'")
        if isinstance(item, int):
            index = item if item >= 0 else depth + 1 + item
        elif isinstance(item, str) and item.strip().lower() == "last":
            index = depth
        elif isinstance(item, str):
            try:
                fraction = Fraction(item.strip())
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"layer {item!r} is not an index, a fraction such as '1/3' or 'last'") from None
            index = max(1, round(fraction * depth)) if fraction.denominator != 1 else int(fraction)
        else:
            raise ValueError(f"layer {item!r} is not an index, a fraction such as '1/3' or 'last'")
        if not 0 <= index <= depth:
            raise ValueError(f"layer {item!r} is outside 0..{depth} (the model has {depth} layers; 0 = embeddings)")
        out.append(index)
    if len(set(out)) != len(out):
        raise ValueError(f"layers {list(layers)} name the same layer twice ({out}) for a {depth}-layer model")
    return out


def layer_module(model: Any, layer: int) -> Any:
    """The module whose output is the residual stream at ``layer``: the embeddings for 0, else block ``layer - 1``."""
    embeddings, blocks = decoder_blocks(model)
    return embeddings if layer == 0 else blocks[layer - 1]


def decoder_blocks(model: Any) -> tuple[Any, Any]:
    """The embedding module and the list of decoder blocks of a causal LM (PEFT-wrapped too)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", base)
    for name in ("layers", "h", "blocks"):
        blocks = getattr(decoder, name, None)
        if blocks is not None:
            return base.get_input_embeddings(), blocks
    raise ValueError(f"cannot find the decoder blocks of {type(base).__name__} (looked for .layers, .h, .blocks)")


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def capture(model: Any, layers: Sequence[int], *, last_only: bool) -> Iterator[dict[int, torch.Tensor]]:
    """Forward hooks that keep each layer's output of the latest forward in the yielded dict.

    ``last_only``: keep the last position only (decoding steps), ``(B, d)``; else ``(B, T, d)``.
    """
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for layer in layers:
        module = layer_module(model, layer)

        def hook(_module, _inputs, output, layer=layer):
            h = _hidden(output)
            seen[layer] = (h[:, -1, :] if last_only else h).detach()

        handles.append(module.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def features_at(model: Any, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                layers: Sequence[int], *, max_batch_tokens: int = 16384, pad_id: int = 0) -> list[torch.Tensor]:
    """Features (the chosen layers' states, concatenated) at ``positions`` of each sequence, one forward each.

    Args:
        sequences: token ids (prompt + completion) of each trace.
        positions: for each sequence, the positions (indices into it) to read.

    Returns:
        per sequence, a float32 tensor ``(len(positions), len(layers) * hidden)``.
    """
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batch: list[int] = []

    def run(batch: list[int]) -> None:
        width = max(len(sequences[i]) for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # right-padded: real tokens keep positions 0..n-1
            ids[row, : len(sequences[i])] = torch.tensor(list(sequences[i]))
            mask[row, : len(sequences[i])] = 1
        with capture(model, layers, last_only=False) as seen:
            model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
        for row, i in enumerate(batch):
            at = torch.tensor(list(positions[i]), dtype=torch.long, device=device)
            out[i] = torch.cat([seen[layer][row].index_select(0, at) for layer in layers], dim=-1).float().cpu()

    for i in order:
        if not positions[i]:
            out[i] = torch.zeros((0, 0))
            continue
        if batch and (len(batch) + 1) * len(sequences[i]) > max_batch_tokens:
            run(batch)
            batch = []
        batch.append(i)
    if batch:
        run(batch)
    return out  # type: ignore[return-value]
