"""Figures of an SFT-on-pruned-traces run: what each pruning removed, and the issue's targets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from effreason.format import count_completion_tokens
from effreason.pruning.classify import ERROR_CORRECTION

#: Targets of the recipe (issue 5): PIR-trained uses >= this share fewer completion tokens than
#: unpruned-trained, with accuracy at most this many points lower.
MIN_TOKEN_REDUCTION = 0.30
MAX_ACCURACY_DROP_POINTS = 1.0


def correction_pairs(labels: Sequence[str]) -> list[tuple[int, int]]:
    """Consecutive error-correction steps taken two by two: (the retracted step, its correction)."""
    pairs, i = [], 0
    while i + 1 < len(labels):
        if labels[i] == ERROR_CORRECTION and labels[i + 1] == ERROR_CORRECTION:
            pairs.append((i, i + 1))
            i += 2
        else:
            i += 1
    return pairs


def removal_figures(rows: Sequence[dict]) -> dict:
    """What a pruning removed: steps by label, and error-correction pairs it split.

    A split pair leaves an inconsistent trace: a wrong value kept with its correction gone (the trace
    then states a wrong step and goes on from the right value), or a correction with nothing to
    correct.
    """
    removed, functional = Counter(), Counter()
    split_wrong_kept = split_correction_kept = pairs = 0
    for row in rows:
        steps = row["steps"]
        for s in steps:
            if s["label"] != "progressive":
                functional[s["label"]] += 1
                removed[s["label"]] += s["removed"]
        for a, b in correction_pairs([s["label"] for s in steps]):
            pairs += 1
            split_wrong_kept += (not steps[a]["removed"]) and steps[b]["removed"]
            split_correction_kept += steps[a]["removed"] and not steps[b]["removed"]
    return {"removed_by_label": dict(removed), "functional_by_label": dict(functional),
            "correction_pairs": pairs, "pairs_wrong_step_kept_correction_removed": split_wrong_kept,
            "pairs_wrong_step_removed_correction_kept": split_correction_kept}


#: How the lab's slippy writer ends a final check that caught a slip (effreason.lab.traces).
LAB_CATCH_END = "that is wrong ;"


def catch_figures(rows: Sequence[dict]) -> dict:
    """Lab slippy traces: how many final checks that *caught a slip* (the steps the answer depends on)
    a pruning kept, against the redundant functional steps; empty when the traces have none."""
    catching = [s for r in rows for s in r["steps"]
                if s["label"] != "progressive" and s["text"].strip().endswith(LAB_CATCH_END)]
    if not catching:
        return {}
    other = [s for r in rows for s in r["steps"]
             if s["label"] != "progressive" and not s["text"].strip().endswith(LAB_CATCH_END)]
    return {"catching_checks": len(catching), "catching_checks_kept": sum(not s["removed"] for s in catching),
            "other_functional_kept_share": sum(not s["removed"] for s in other) / max(len(other), 1)}


def data_figures(variant_rows: dict[str, Sequence[dict]], prune_summary: dict[str, dict], tokenizer) -> dict:
    """Per training set: traces, mean completion tokens (with EOS, as generated), reduction against
    the unpruned set; for pruned sets, the pruning summary and ``removal_figures``."""
    def tokens(text: str) -> int:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return count_completion_tokens(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)

    out = {}
    base = None
    for name, rows in variant_rows.items():
        field = "completion" if name == "unpruned" else "pruned_completion"
        mean = sum(tokens(r[field]) for r in rows) / max(len(rows), 1)
        base = mean if name == "unpruned" else base
        figures = {"traces": len(rows), "tokens_mean": mean}
        if base and name != "unpruned":
            figures["token_reduction"] = 1.0 - mean / base
        if name in prune_summary:
            figures.update(prune=prune_summary[name], **removal_figures(rows), **catch_figures(rows))
        out[name] = figures
    return out


def target_figures(runs: dict[str, dict]) -> dict:
    """The issue's targets from eval results (``accuracy``, ``tokens_mean`` per run).

    - ``pir_token_reduction`` = 1 - tokens(pir) / tokens(unpruned), target >= 0.30;
    - ``pir_accuracy_delta_points`` = 100 (acc(pir) - acc(unpruned)), target >= -1;
    - PIR beats random: higher accuracy, or the same accuracy with fewer tokens.
    """
    out: dict = {}
    pir, unpruned, rnd = runs.get("pir"), runs.get("unpruned"), runs.get("random")
    if pir and unpruned:
        out["pir_token_reduction"] = 1.0 - pir["tokens_mean"] / unpruned["tokens_mean"]
        out["pir_accuracy_delta_points"] = 100.0 * (pir["accuracy"] - unpruned["accuracy"])
        out["pir_shorter_and_as_accurate"] = (out["pir_token_reduction"] >= MIN_TOKEN_REDUCTION
                                              and out["pir_accuracy_delta_points"] >= -MAX_ACCURACY_DROP_POINTS)
    if pir and rnd:
        out["pir_minus_random_accuracy_points"] = 100.0 * (pir["accuracy"] - rnd["accuracy"])
        out["pir_minus_random_tokens"] = pir["tokens_mean"] - rnd["tokens_mean"]
        out["pir_beats_random"] = pir["accuracy"] > rnd["accuracy"] or (
            pir["accuracy"] == rnd["accuracy"] and pir["tokens_mean"] < rnd["tokens_mean"])
    return out
