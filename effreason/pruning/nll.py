"""Mean negative log-likelihood of the scored tail of token sequences, two ways.

``answer_nll`` runs every sequence in full (packed, right-padded batches: the reference and the
"one forward pass per ablation" baseline with ``max_batch_tokens=0``).

``shared_prefix_nll`` is what PIR scoring uses: all its sequences are one reference (the full trace)
with one span removed each, so each variant shares a prefix with the reference. The reference runs
once with ``use_cache``; for each variant only the suffix after the shared prefix is computed,
attending to the reference's cached keys / values of that prefix. The suffixes are *packed* one
after another into a single row (no padding): suffix j sees the first ``p_j`` cached positions (its
shared prefix; the cached positions after it hold the removed step) and itself, causally, and
nothing of the other suffixes. That attention pattern is an attention function registered with
``transformers.AttentionInterface`` (``_segment_attention``) and switched on for the packed passes
only. Each suffix token keeps its true position id, so rotary embeddings see the positions a full
pass would. Results equal full passes up to float rounding (tested to 1e-4 on Qwen3 and Llama).

The saving is in tokens run: with the removed steps spread evenly through a trace, the suffixes
average half a trace, so prefix reuse runs about 2x fewer tokens than n+1 full passes, whatever
the batching (``eval/bench_pir.py`` prints both counts and times).

Both compute logits only at the scored positions (no (B, T, vocab) tensor), through
``model.base_model`` and ``model.get_output_embeddings()``, which fits any HF causal LM whose
attention goes through ``AttentionInterface`` and that does not post-process its logits. Models
that do (Gemma's final-logit soft-capping, Cohere's logit scale, attention soft-capping or sinks,
remote code) are caught, not trusted: the first call of each path for a model is checked against
``definition_nll`` (the model's own forward, one sequence per pass) and, if they differ, that model
is scored with ``definition_nll`` from then on, with a warning. The log-softmax runs in float64: a
confident scorer puts the answer's NLL near 1e-6, where float32 log-sum-exp rounds differences
between ablations away.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: Name under which ``_segment_attention`` is registered with ``transformers.AttentionInterface``.
SEGMENT_ATTENTION = "effreason_segments"


def _batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first so that batch size x longest length <= max_batch_tokens
    (a sequence longer than the budget runs alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _packs(prefixes: Sequence[int], suffixes: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Variant indices in order, grouped so that the longest prefix plus the packed suffixes of a
    group (the keys of one pass) stay <= max_batch_tokens; a variant over the budget goes alone."""
    packs: list[list[int]] = []
    longest_prefix = queries = 0
    for i in range(len(suffixes)):
        if packs and max(longest_prefix, prefixes[i]) + queries + suffixes[i] <= max_batch_tokens:
            packs[-1].append(i)
            longest_prefix, queries = max(longest_prefix, prefixes[i]), queries + suffixes[i]
        else:
            packs.append([i])
            longest_prefix, queries = prefixes[i], suffixes[i]
    return packs


def _mean_nll(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean NLL per row of ``targets`` (B, A) given the hidden states that predict them (B, A, H)."""
    # float64: a confident scorer's NLL (~1e-6) is below float32 resolution of log-sum-exp
    logp = torch.log_softmax(head(hidden).double(), dim=-1)  # (B, A, V)
    return -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean(dim=1)  # (B,)


def _check(sequences: Sequence[Sequence[int]], scored_tokens: int) -> None:
    if scored_tokens < 1:
        raise ValueError(f"scored_tokens must be >= 1, got {scored_tokens}")
    if min(len(s) for s in sequences) <= scored_tokens:
        raise ValueError("every sequence needs at least one context token before the scored tokens")


@torch.no_grad()
def definition_nll(model, sequences: Sequence[Sequence[int]], scored_tokens: int) -> list[float]:
    """Mean NLL of the last ``scored_tokens`` tokens of each sequence by the definition: one pass per
    sequence through the model's own forward (its own output head and logit post-processing), the
    log-softmax in float64. Slow; what the fast paths are checked against."""
    _check(sequences, scored_tokens)
    device = next(model.parameters()).device
    out = []
    for seq in sequences:
        ids = torch.tensor([list(seq)], device=device)  # (1, L)
        try:  # logits of the last A + 1 positions only; the last one predicts nothing scored
            logits = model(input_ids=ids, logits_to_keep=scored_tokens + 1).logits[0, :-1]
        except TypeError:  # a model without ``logits_to_keep``
            logits = model(input_ids=ids).logits[0, -scored_tokens - 1:-1]
        logp = torch.log_softmax(logits.double(), dim=-1)  # (A, V)
        out.append(float(-logp.gather(-1, ids[0, -scored_tokens:, None]).mean()))
    return out


#: per model: scoring path -> whether it matched ``definition_nll`` on its first call
_CHECKED = "_effreason_scoring_paths"


def _checked(model, path: str, fast, sequences: Sequence[Sequence[int]], scored_tokens: int) -> list[float]:
    """``fast()`` (NLLs of ``sequences``), checked against ``definition_nll`` on the first call of
    ``path`` for ``model``; a path that differed is replaced by the definition for that model."""
    paths = model.__dict__.setdefault(_CHECKED, {})
    if paths.get(path) is False:
        return definition_nll(model, sequences, scored_tokens)
    got = fast()
    if path not in paths:
        want = definition_nll(model, sequences, scored_tokens)
        gap = max(abs(a - b) for a, b in zip(got, want, strict=True))
        half = next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
        paths[path] = gap <= (5e-2 if half else 1e-4)
        if not paths[path]:
            logger.warning("%s: %s scoring differs from the model's own forward by %.3g nats (logit post-processing "
                           "or an attention variant it does not reproduce); scoring one full forward pass per "
                           "sequence instead (exact, slower)", type(model).__name__, path, gap)
            return want
    return got


@torch.no_grad()
def answer_nll(model, sequences: Sequence[Sequence[int]], scored_tokens: int, *, pad_token_id: int,
               max_batch_tokens: int = 16384) -> list[float]:
    """Mean NLL of the last ``scored_tokens`` tokens of each sequence, every sequence run in full.

    ``max_batch_tokens`` bounds padded batch size x length; ``0`` runs one sequence per pass.
    Checked against ``definition_nll`` on its first call per model (see the module docstring).
    """
    _check(sequences, scored_tokens)
    return _checked(model, "full-pass", lambda: _answer_nll(model, sequences, scored_tokens, pad_token_id,
                                                            max_batch_tokens), sequences, scored_tokens)


def _answer_nll(model, sequences: Sequence[Sequence[int]], scored_tokens: int, pad_token_id: int,
                max_batch_tokens: int) -> list[float]:
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    lengths = [len(s) for s in sequences]
    out = [0.0] * len(sequences)
    for batch in _batches(lengths, max_batch_tokens):
        t_max = lengths[batch[0]]
        ids = torch.full((len(batch), t_max), pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), t_max), dtype=torch.long)
        for row, i in enumerate(batch):  # right padding: real tokens keep their positions
            ids[row, :lengths[i]] = torch.tensor(sequences[i])
            mask[row, :lengths[i]] = 1
        ids, mask = ids.to(device), mask.to(device)
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        # Position t predicts token t+1: scored tokens [L-A, L) are predicted at [L-A-1, L-1).
        offsets = torch.arange(scored_tokens)
        pos = torch.stack([offsets + lengths[i] - scored_tokens - 1 for i in batch]).to(device)  # (B, A)
        h = hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, A, H)
        nll = _mean_nll(head, h, ids.gather(1, pos + 1))
        for row, i in enumerate(batch):
            out[i] = float(nll[row])
    return out


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _prefix_cache(model, reference: Sequence[int], scored_tokens: int, device):
    """One pass over ``reference``: its scored-token NLL and per-layer cached (keys, values), or None
    for the cache when the model's cache does not hold every position (sliding windows)."""
    ids = torch.tensor([list(reference)], device=device)  # (1, L)
    out = model.base_model(input_ids=ids, use_cache=True)
    length = len(reference)
    nll = _mean_nll(model.get_output_embeddings(), out.last_hidden_state[:, length - scored_tokens - 1:-1],
                    ids[:, length - scored_tokens:])
    cache = out.past_key_values
    layers = [(layer.keys, layer.values) for layer in getattr(cache, "layers", [])]
    if not layers or any(k.shape[-2] != length for k, _ in layers):
        return float(nll[0]), None
    return float(nll[0]), layers  # each (1, heads, L, head_dim)


def _segment_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                       *, scaling: float | None = None, segments: Sequence[tuple[int, int, int]] = (),
                       **kwargs) -> tuple[torch.Tensor, None]:
    """Attention of packed suffixes, each over its own cached prefix and itself (causally).

    An HF attention function (``transformers.AttentionInterface``). ``query`` (1, H, Q, d) holds the
    packed suffixes; ``key`` / ``value`` (1, Hkv, P + Q, d) the cached prefix then the suffixes;
    ``segments`` the ``(prefix, start, end)`` of each suffix in the pack. Each suffix runs its own
    ``scaled_dot_product_attention``, so no work is spent on masked-out pairs: with a longer suffix
    than prefix the queries are left-padded to a square and run with ``is_causal`` (kernels skip the
    masked half), else a lower-right causal mask.
    """
    width_p = key.shape[2] - query.shape[2]
    gqa = query.shape[1] != key.shape[1]
    outs = []
    for p, start, end in segments:
        k = torch.cat([key[:, :, :p], key[:, :, width_p + start:width_p + end]], dim=2)  # (1, Hkv, p + s, d)
        v = torch.cat([value[:, :, :p], value[:, :, width_p + start:width_p + end]], dim=2)
        q, s = query[:, :, start:end], end - start
        if s > p:
            q = torch.cat([q.new_zeros(*q.shape[:2], p, q.shape[-1]), q], dim=2)  # (1, H, p + s, d)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa)[:, :, p:]
        else:
            allowed = torch.ones((s, p + s), dtype=torch.bool, device=q.device).tril(diagonal=p)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling, enable_gqa=gqa)
        outs.append(o)
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None  # (1, Q, H, d), as HF expects


@contextmanager
def _attention(model, name: str):
    """Temporarily switch the model's attention implementation (restored on exit)."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


@torch.no_grad()
def shared_prefix_nll(model, reference: Sequence[int], variants: Sequence[Sequence[int]], scored_tokens: int, *,
                      pad_token_id: int, max_batch_tokens: int = 16384) -> tuple[float, list[float]]:
    """Mean NLL of the last ``scored_tokens`` tokens of ``reference`` and of each variant, reusing the
    reference's KV cache for the prefix each variant shares with it (see the module docstring).

    Falls back to full passes (``answer_nll``) when the cache cannot be reused (a partial cache, as
    with sliding windows). ``max_batch_tokens`` bounds the cached prefix + packed suffix tokens of one
    pass. Checked against ``definition_nll`` on its first call per model (see the module docstring).

    Returns:
        (reference NLL, one NLL per variant).
    """
    sequences = [reference, *variants]
    _check(sequences, scored_tokens)
    full, *rest = _checked(model, "prefix-reuse", lambda: _shared_prefix_nll(
        model, reference, variants, scored_tokens, pad_token_id, max_batch_tokens), sequences, scored_tokens)
    return full, rest


def _shared_prefix_nll(model, reference: Sequence[int], variants: Sequence[Sequence[int]], scored_tokens: int,
                       pad_token_id: int, max_batch_tokens: int) -> list[float]:
    from transformers import AttentionInterface, DynamicCache

    device = next(model.parameters()).device
    full, layers = _prefix_cache(model, reference, scored_tokens, device)
    if layers is None:
        logger.warning("%s keeps a partial KV cache (sliding window?): scoring with full passes", type(model).__name__)
        return [full, *answer_nll(model, variants, scored_tokens, pad_token_id=pad_token_id,
                                  max_batch_tokens=max_batch_tokens)]
    AttentionInterface.register(SEGMENT_ATTENTION, _segment_attention)
    head = model.get_output_embeddings()
    # Every scored position must be recomputed: the prefix stops before the first of them.
    prefixes = [min(common_prefix(reference, v), len(v) - scored_tokens - 1) for v in variants]
    suffixes = [len(v) - p for v, p in zip(variants, prefixes, strict=True)]
    out = [0.0] * len(variants)
    for pack in _packs(prefixes, suffixes, max_batch_tokens):
        ends = torch.tensor([suffixes[i] for i in pack]).cumsum(0).tolist()
        segments = [(prefixes[i], end - suffixes[i], end) for i, end in zip(pack, ends, strict=True)]
        width_p = max(prefixes[i] for i in pack)
        ids = torch.tensor([[t for i in pack for t in variants[i][prefixes[i]:]]], device=device)  # (1, Q)
        pos = torch.cat([p + torch.arange(e - s) for p, s, e in segments])[None].to(device)  # (1, Q) true positions
        cache = DynamicCache([(k[:, :, :width_p], v[:, :, :width_p]) for k, v in layers])
        with _attention(model, SEGMENT_ATTENTION):
            hidden = model.base_model(input_ids=ids, position_ids=pos, past_key_values=cache, use_cache=True,
                                      segments=segments).last_hidden_state[0]  # (Q, H)
        at = (torch.tensor(ends)[:, None] - scored_tokens - 1 + torch.arange(scored_tokens)).to(device)  # (n, A)
        nll = _mean_nll(head, hidden[at], ids[0][at + 1])
        for k, i in enumerate(pack):
            out[i] = float(nll[k])
    return [full, *out]
