"""Timing of PIR scoring: one forward pass per ablation vs packed batches vs shared-prefix KV reuse."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from effreason.pruning.classify import MarkerClassifier, StepClassifier, is_functional
from effreason.pruning.nll import answer_nll, common_prefix, shared_prefix_nll
from effreason.pruning.pir import Ablations, ablation_sequences, parse_trace
from effreason.pruning.segment import ParagraphSegmenter, Segmenter

#: mode -> how the n+1 sequences of a trace are scored
MODES = ("per_ablation", "batched", "prefix")


def _score(mode: str, model, abl: Ablations, pad: int, max_batch_tokens: int) -> list[float]:
    seqs, a = abl.sequences, abl.scored_tokens
    if mode == "prefix":
        full, rest = shared_prefix_nll(model, seqs[0], seqs[1:], a, pad_token_id=pad,
                                       max_batch_tokens=max_batch_tokens)
        return [full, *rest]
    return answer_nll(model, seqs, a, pad_token_id=pad, max_batch_tokens=max_batch_tokens if mode == "batched" else 0)


def scoring_work(tokenizer, rows: Sequence[dict], segmenter: Segmenter, classifier: StepClassifier) -> list[Ablations]:
    """The ablation sequences PIR scores for ``rows`` (``problem``, ``completion``, optional ``answer``)."""
    work = []
    for row in rows:
        parsed = parse_trace(row["completion"], segmenter)
        labels = classifier([s.strip() for s in parsed.steps])
        ablate = [i for i, label in enumerate(labels) if is_functional(label)]
        if ablate:
            work.append(ablation_sequences(tokenizer, row["problem"], parsed, ablate, gold=row.get("answer")))
    return work


def time_pir_scoring(model, tokenizer, rows: Sequence[dict], *, segmenter: Segmenter | None = None,
                     classifier: StepClassifier | None = None, max_batch_tokens: int = 16384,
                     modes: Sequence[str] = MODES) -> dict:
    """Score the functional steps of ``rows`` in each mode and time it (one run per mode, in order).

    Returns:
        ``bench/<mode>_s`` wall seconds; ``bench/speedup_<mode>`` (per-ablation seconds / mode seconds);
        ``bench/max_abs_diff_<mode>`` (largest PIR gap to the per-ablation scores, a correctness check);
        ``bench/traces``, ``bench/sequences``, ``bench/tokens_full`` (tokens that full passes run) and
        ``bench/tokens_prefix`` (tokens that prefix reuse runs).
    """
    if "per_ablation" not in modes:
        raise ValueError("modes must include 'per_ablation' (the reference the others are compared with)")
    segmenter, classifier = segmenter or ParagraphSegmenter(), classifier or MarkerClassifier()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    work = scoring_work(tokenizer, rows, segmenter, classifier)
    timings, pir = {}, {}
    for mode in modes:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # each mode is timed to its last score, read back to the host
        start = time.perf_counter()
        nll = [_score(mode, model, abl, pad, max_batch_tokens) for abl in work]
        timings[mode] = time.perf_counter() - start
        pir[mode] = [x - scores[0] for scores in nll for x in scores[1:]]
    out = {"bench/traces": len(work), "bench/sequences": sum(len(a.sequences) for a in work),
           "bench/tokens_full": sum(len(s) for a in work for s in a.sequences),
           "bench/tokens_prefix": sum(len(a.sequences[0]) + sum(len(s) - min(common_prefix(a.sequences[0], s),
                                                                             len(s) - a.scored_tokens - 1)
                                                                for s in a.sequences[1:]) for a in work)}
    for mode in modes:
        out[f"bench/{mode}_s"] = timings[mode]
        out[f"bench/speedup_{mode}"] = timings["per_ablation"] / timings[mode] if timings[mode] else float("nan")
        out[f"bench/max_abs_diff_{mode}"] = max((abs(x - y) for x, y in zip(pir[mode], pir["per_ablation"],
                                                                             strict=True)), default=0.0)
    return out
