"""The direction: the mean difference of concise and verbose states at one layer (ASC, arXiv 2507.04742).

``v_l = mean_i [h_l(prompt_i + concise_i)[pos] - h_l(prompt_i + verbose_i)[pos]]`` with ``h_l`` the
residual stream at layer ``l`` (``effreason.hidden``: read by a forward hook on the module the vector
is later added to) and ``pos`` the position rule: ``last`` (the final token, ASC) or ``mean`` (the mean
over the completion's tokens). Every candidate layer is read in the same forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from effreason.hidden import features_at
from effreason.steering.pairs import Pair


def _positions(prompt_len: int, total: int, rule: str) -> list[int]:
    if rule == "last":
        return [total - 1]
    if rule == "mean":
        return list(range(prompt_len, total))
    raise ValueError(f"position rule must be 'last' or 'mean', got {rule!r}")


def directions(model: Any, pairs: Sequence[Pair], layers: Sequence[int], *, position: str = "last",
               max_batch_tokens: int = 16384, pad_id: int = 0) -> dict[int, torch.Tensor]:
    """``{layer: v}``, each the mean over pairs of (concise state - verbose state) at that layer, float32.

    Raises:
        ValueError: no pairs, or a pair with an empty completion.
    """
    if not pairs:
        raise ValueError("no pairs to extract a direction from")
    sequences, positions = [], []
    for pair in pairs:
        for completion in (pair.concise_ids, pair.verbose_ids):
            if not completion:
                raise ValueError(f"pair {pair.id}: an empty completion")
            seq = list(pair.prompt_ids) + list(completion)
            sequences.append(seq)
            positions.append(_positions(len(pair.prompt_ids), len(seq), position))
    feats = features_at(model, sequences, positions, list(layers), max_batch_tokens=max_batch_tokens, pad_id=pad_id)
    pooled = torch.stack([f.mean(0) for f in feats])  # (2P, len(layers) * d)
    diff = (pooled[0::2] - pooled[1::2]).mean(0).view(len(layers), -1)
    return {layer: diff[i].clone() for i, layer in enumerate(layers)}
