"""From samples.jsonl rows to the figures of results.json and the markdown summary.

Everything is computed from the rows alone, so results of a resumed run equal those of an
uninterrupted one. Rows with ``budget`` null are the unbudgeted completions; the others are the same
samples under budget forcing (see ``effreason.generation.budget_forcing``).
"""

from __future__ import annotations

import math
from collections import defaultdict

from effreason.evaluation import metrics

#: Result keys that describe one invocation (timing), not the run's outcome.
TIMING_KEYS = ("wall_time_s", "throughput", "resumed_rows", "created")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(rows: list[dict], *, samples_per_problem: int = 1, budgets: list[int] | None = None,
              has_tokens: bool = True) -> dict:
    """The run's figures: accuracy, token statistics, truncation, EFF, k-sample and budget figures.

    Args:
        rows: samples.jsonl rows (keys ``id, sample, budget, correct, extracted, tokens, ...``).
        has_tokens: False when token counts are unknown (graded text without a tokenizer): token figures
            are then ``None``, never character counts.
    """
    base = sorted((r for r in rows if r.get("budget") is None), key=lambda r: (str(r["id"]), r["sample"]))
    acc = metrics.accuracy([r["correct"] for r in base])
    out: dict = {
        "accuracy": acc,
        "n": len({str(r["id"]) for r in base}),
        "num_samples": len(base),
        "samples_per_problem": samples_per_problem,
    }
    if has_tokens:
        out.update(metrics.token_stats([r["tokens"] for r in base]))
        out["thinking_tokens_mean"] = _mean([r["thinking_tokens"] for r in base])
        out["answer_tokens_mean"] = _mean([r["answer_tokens"] for r in base])
        out["eff"] = metrics.eff(acc, out["tokens_mean"])
        out["accuracy_per_1k_tokens"] = metrics.accuracy_per_1k_tokens(acc, out["tokens_mean"])
    else:
        for key in ("tokens_mean", "tokens_median", "tokens_p90", "tokens_max", "thinking_tokens_mean",
                    "answer_tokens_mean", "eff", "accuracy_per_1k_tokens"):
            out[key] = None
    out["truncation_rate"] = metrics.accuracy([r["truncated"] for r in base])
    reasons: dict[str, int] = defaultdict(int)
    for r in base:
        reasons[r["reason"]] += 1
    out["grade_reasons"] = dict(sorted(reasons.items()))
    if samples_per_problem > 1:
        out.update(_k_sample_figures(base))
        out["parallel"] = parallel_figures(base, has_tokens)
        if out["parallel"]["method"] != "majority":  # the run's answer is the vote of the m that counted
            out["sample_accuracy"], out["accuracy"] = out["accuracy"], out["parallel"]["accuracy"]
    if budgets:
        out["budgets"], out["budget_auc"] = _budget_figures(rows, budgets, has_tokens)
    return _finite(out)


def _k_sample_figures(base: list[dict]) -> dict:
    groups: dict[str, list[tuple[str | None, bool]]] = defaultdict(list)
    for r in base:
        groups[str(r["id"])].append((r["extracted"], bool(r["correct"])))
    return {
        "accuracy_mean_at_k": metrics.accuracy([r["correct"] for r in base]),
        "majority_accuracy": metrics.majority_accuracy(list(groups.values())),
        "pass_at_k": metrics.accuracy([any(ok for _, ok in g) for g in groups.values()]),
    }


#: Methods that draw k samples in parallel and vote (``effreason.generation.parallel``).
PARALLEL_METHODS = ("short_m_at_k", "first_finish")


def parallel_figures(base: list[dict], has_tokens: bool = True) -> dict:
    """Voted accuracy, latency and compute tokens of a k-sample run: majority@k, or short-m@k / first-finish.

    majority@k votes over all k samples; latency tokens are the longest of them (k decoded in parallel),
    compute tokens their sum. short-m@k votes over the m counted samples ordered by when they finished
    thinking, so a tie goes to the shorter; latency tokens are the longest of the m, compute tokens all
    k as far as they got (``effreason.generation.parallel``).
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in base:
        groups[str(r["id"])].append(r)
    method = next((name for name in PARALLEL_METHODS if name in (base[0].get("method_info") or {})), None) \
        if base else None
    hits, latency, compute = [], [], []
    k = m = None
    for rows in groups.values():
        rows = sorted(rows, key=lambda r: r["sample"])
        if method is None:
            voters = rows
        else:
            infos = [r["method_info"][method] for r in rows]
            k, m = infos[0]["k"], infos[0]["m"]
            voters = sorted((r for r, i in zip(rows, infos, strict=True) if i["counted"]),
                            key=lambda r: (r["method_info"][method]["thinking_end"], r["sample"]))
            if not voters:  # fewer than m finished thinking: nothing was stopped, all vote
                voters = rows
        winner = metrics.majority_vote([r["extracted"] for r in voters])
        hits.append(winner is not None and any(r["correct"] for r in voters if r["extracted"] == winner))
        latency.append(max(r["tokens"] for r in voters))
        compute.append(sum(r["tokens"] for r in rows))
    return {"method": method or "majority", "k": k or (len(base) // max(1, len(groups))), "m": m,
            "accuracy": metrics.accuracy(hits),
            "latency_tokens_mean": _mean(latency) if has_tokens else None,
            "compute_tokens_mean": _mean(compute) if has_tokens else None}


def _budget_figures(rows: list[dict], budgets: list[int], has_tokens: bool) -> tuple[dict, float]:
    by_budget: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("budget") is not None:
            by_budget[int(r["budget"])].append(r)
    figures = {}
    for b in sorted(budgets):
        rs = by_budget.get(b, [])
        figures[str(b)] = {
            "accuracy": metrics.accuracy([r["correct"] for r in rs]),
            "tokens_mean": _mean([r["tokens"] for r in rs]) if has_tokens else None,
            "forced_rate": metrics.accuracy([r["forced"] for r in rs]),
            "num_samples": len(rs),
        }
    auc = metrics.budget_auc({int(b): f["accuracy"] for b, f in figures.items()})
    return figures, auc


def _finite(obj):
    """NaN and infinities become ``None`` (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def baseline_figures(results: dict, baseline: dict, weights: tuple[float, float, float] = metrics.AES_WEIGHTS) -> dict:
    """Token reduction and AES of ``results`` against a baseline run's results (both results.json dicts)."""
    out = {"accuracy_delta": results["accuracy"] - baseline["accuracy"], "aes_weights": dict(zip("abc", weights, strict=True))}
    t, t_base = results.get("tokens_mean"), baseline.get("tokens_mean")
    if t is None or not t_base:
        out["token_reduction"] = out["aes"] = None
        return out
    out["token_reduction"] = metrics.token_reduction(t, t_base)
    out["aes"] = metrics.aes(results["accuracy"], t, baseline["accuracy"], t_base, weights) if baseline["accuracy"] > 0 else None
    return out


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def exit_figures(rows: list[dict]) -> dict | None:
    """What early exit did over a run's rows (``method_info.early_exit``), or ``None`` without it: the share
    of rows that exited, of rows that exited and are wrong, cues decided, tokens generated past the cuts."""
    infos = [(r, r["method_info"]["early_exit"]) for r in rows if "early_exit" in (r.get("method_info") or {})]
    if not infos:
        return None
    n = len(infos)
    return {"delta": infos[0][1].get("delta"), "exit_rate": sum(i["exited"] for _, i in infos) / n,
            "exited_wrong_rate": sum(i["exited"] and not r["correct"] for r, i in infos) / n,
            "cues_seen_mean": sum(i["cues_seen"] for _, i in infos) / n,
            "discarded_tokens_mean": sum(i["discarded"] for _, i in infos) / n}


def summary_markdown(results: dict) -> str:
    """A short human-readable summary of results.json."""
    cfg = results.get("config", {})
    title = cfg.get("benchmark") or cfg.get("data") or cfg.get("completions") or "eval"
    lines = [f"# effreason eval: {title}", "",
             f"- model: `{results.get('model')}`  backend: `{results.get('backend')}`",
             f"- problems: {results['n']}  samples per problem: {results['samples_per_problem']}", "",
             "| metric | value |", "|---|---|"]
    keys = ["accuracy", "majority_accuracy", "pass_at_k", "tokens_mean", "tokens_median", "tokens_p90",
            "tokens_max", "thinking_tokens_mean", "answer_tokens_mean", "truncation_rate", "eff",
            "accuracy_per_1k_tokens", "budget_auc", "wall_time_s"]
    for key in keys:
        if key in results:
            lines.append(f"| {key} | {_fmt(results[key], 5 if key == 'eff' else 3)} |")
    if results.get("parallel"):
        par = results["parallel"]
        m = f", m={par['m']}" if par.get("m") else ""
        lines += ["", f"{par['method']} (k={par['k']}{m}): voted accuracy {_fmt(par['accuracy'])}, latency tokens "
                      f"{_fmt(par['latency_tokens_mean'], 1)}, compute tokens {_fmt(par['compute_tokens_mean'], 1)} "
                      "per problem."]
    if results.get("early_exit"):
        ex = results["early_exit"]
        lines += ["", f"Early exit (delta {ex['delta']}): {_fmt(ex['exit_rate'])} of the completions exited, "
                      f"{_fmt(ex['exited_wrong_rate'])} exited and are wrong; {_fmt(ex['cues_seen_mean'], 1)} cues "
                      f"decided and {_fmt(ex['discarded_tokens_mean'], 1)} tokens generated past the cut per completion "
                      "(not in the token figures above, which count the completion as kept)."]
    if results.get("budgets"):
        lines += ["", "| budget | accuracy | tokens_mean | forced_rate |", "|---|---|---|---|"]
        for b, f in results["budgets"].items():
            lines.append(f"| {b} | {_fmt(f['accuracy'])} | {_fmt(f['tokens_mean'], 1)} | {_fmt(f['forced_rate'])} |")
    if results.get("vs_baseline"):
        vb = results["vs_baseline"]
        w = vb["aes_weights"]
        lines += ["", f"Against baseline `{vb.get('baseline')}`: token reduction {_fmt(vb['token_reduction'])}, "
                      f"accuracy delta {_fmt(vb['accuracy_delta'])}, AES {_fmt(vb['aes'])} "
                      f"(weights a={w['a']}, b={w['b']}, c={w['c']})."]
    return "\n".join(lines) + "\n"
