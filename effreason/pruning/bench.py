"""Timing of PIR scoring: packed batches vs one forward pass per ablation."""

from __future__ import annotations

import time
from collections.abc import Sequence

from effreason.pruning.classify import MarkerClassifier, StepClassifier, is_functional
from effreason.pruning.pir import ablation_sequences, answer_nll, parse_trace
from effreason.pruning.segment import ParagraphSegmenter, Segmenter


def time_pir_scoring(model, tokenizer, rows: Sequence[dict], *, segmenter: Segmenter | None = None,
                     classifier: StepClassifier | None = None, max_batch_tokens: int = 16384) -> dict:
    """Score the functional steps of ``rows`` (``problem``, ``completion``) both ways and time them.

    Returns:
        ``bench/batched_s``, ``bench/per_ablation_s``, ``bench/speedup`` (per-ablation / batched),
        ``bench/sequences`` (forward sequences per mode), ``bench/max_abs_diff`` (largest NLL gap
        between the two modes, a correctness check).
    """
    segmenter, classifier = segmenter or ParagraphSegmenter(), classifier or MarkerClassifier()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    work = []
    for row in rows:
        parsed = parse_trace(row["completion"], segmenter)
        labels = classifier([s.strip() for s in parsed.steps])
        ablate = [i for i, label in enumerate(labels) if is_functional(label)]
        work.append(ablation_sequences(tokenizer, row["problem"], parsed, ablate))
    timings, results = {}, {}
    for name, budget in (("batched", max_batch_tokens), ("per_ablation", 0)):
        start = time.perf_counter()
        results[name] = [answer_nll(model, seqs, a, pad_token_id=pad, max_batch_tokens=budget)
                         for seqs, a in work]
        timings[name] = time.perf_counter() - start
    diff = max((abs(x - y) for b, u in zip(results["batched"], results["per_ablation"], strict=True)
                for x, y in zip(b, u, strict=True)), default=0.0)
    return {
        "bench/batched_s": timings["batched"],
        "bench/per_ablation_s": timings["per_ablation"],
        "bench/speedup": timings["per_ablation"] / timings["batched"] if timings["batched"] else float("nan"),
        "bench/sequences": sum(len(seqs) for seqs, _ in work),
        "bench/max_abs_diff": diff,
    }
