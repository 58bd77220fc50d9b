"""The reasoning adapter's comparison: base alone, adapter always on, adapter per bucket, routed.

``compare`` evaluates each system with the eval suite (``<output_dir>/eval/<benchmark>/<run>``, resumable),
then writes ``comparison.json`` (one row per run and benchmark: the eval suite's comparison figures against
the adapter always on, plus the routing and bucket figures), ``comparison.md`` and a plot per benchmark.

Routing figures (``routing_figures``) join the routed run with the base-alone run on the same problems:
``recall`` (of the problems the base answers correctly alone, the share routed to it), ``routed_to_base_accuracy``
(of the problems routed to the base, the share answered correctly), the tokens saved against the adapter
always on and their **ceiling** (the adapter's tokens on the problems the base answers correctly, less the
base's tokens there: the most a perfect router saves), and the router's cost as a share of generation time.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _run(eval_args: Any, root: Path, bench: str, name: str, model: str, adapter: str | None, methods: dict,
         *, instruction: str | None, data_dir: str | None, backend: str | None = None,
         limit: int | None = None) -> tuple[dict, Path]:
    """Evaluate one system into ``root/eval/<bench>/<name>``; an earlier run of other settings is redone."""
    from effreason.evaluation.posttrain import eval_config
    from effreason.evaluation.runner import run_eval
    from effreason.evaluation.store import ConfigMismatchError

    args = replace(eval_args, eval_benchmark=bench, eval_split="test", eval_methods=methods)
    if limit is not None:
        args = replace(args, eval_limit=min(limit, eval_args.eval_limit or limit))
    cfg = replace(eval_config(args, root, name, model, adapter, instruction, data_dir),
                  output=str(root / "eval" / bench / name), **({"backend": backend} if backend else {}))
    try:
        results = run_eval(cfg)
    except ConfigMismatchError:
        logger.info("%s holds an evaluation of other weights or settings: evaluating again", cfg.output)
        results = run_eval(replace(cfg, overwrite=True))
    logger.info("%s %s: accuracy %.3f, tokens %.1f", bench, name, results["accuracy"], results.get("tokens_mean") or 0)
    return results, Path(cfg.output)


def _rows(folder: Path) -> dict[str, dict]:
    from effreason.evaluation.store import SAMPLES_FILE, read_samples

    rows, _ = read_samples(folder / SAMPLES_FILE)
    return {r["id"]: r for r in rows if r.get("budget") is None and r.get("sample", 0) == 0}


def routing_figures(routed: dict[str, dict], base: dict[str, dict], adapter: dict[str, dict],
                    generation_s: float | None) -> dict:
    """The routed run against base alone and adapter always on, problem by problem (module docstring)."""
    ids = sorted(routed)
    to_base = [i for i in ids if (routed[i].get("method_info") or {}).get("route") == "base"]
    base_right = [i for i in ids if base[i]["correct"]]
    tokens = {k: sum(rows[i]["tokens"] for i in ids) for k, rows in (("routed", routed), ("adapter", adapter))}
    ceiling = sum(adapter[i]["tokens"] - base[i]["tokens"] for i in base_right)
    router_s = sum((routed[i].get("method_info") or {}).get("router_s") or 0.0 for i in ids)
    return {
        "problems": len(ids), "routed_to_base": len(to_base), "routed_to_base_share": len(to_base) / len(ids),
        "base_correct": len(base_right),
        "recall": (sum(i in set(to_base) for i in base_right) / len(base_right)) if base_right else None,
        "routed_to_base_accuracy": (sum(routed[i]["correct"] for i in to_base) / len(to_base)) if to_base else None,
        "tokens_saved_share": 1 - tokens["routed"] / tokens["adapter"] if tokens["adapter"] else None,
        "tokens_saved_ceiling_share": ceiling / tokens["adapter"] if tokens["adapter"] else None,
        "router_s": router_s, "router_share_of_generation": router_s / generation_s if generation_s else None,
    }


def bucket_figures(rows: dict[str, dict], tokens: int) -> dict:
    """Thinking tokens of a bucket's run and the share of completions within the bucket."""
    thinking = [r["thinking_tokens"] for r in rows.values()]
    return {"bucket_tokens": tokens, "thinking_tokens_mean": sum(thinking) / len(thinking),
            "within_bucket_share": sum(t <= tokens for t in thinking) / len(thinking)}


def steps_accuracy(rows: dict[str, dict]) -> dict[int, float] | None:
    """Accuracy by lab step count (the highest ``s<k>`` label in the prompt); ``None`` off the lab."""
    by: dict[int, list[bool]] = {}
    for r in rows.values():
        labels = [int(m) for m in re.findall(r"\bs(\d+)\b", r["prompt"])]
        if not labels:
            return None
        by.setdefault(max(labels), []).append(bool(r["correct"]))
    return {k: sum(v) / len(v) for k, v in sorted(by.items())}


def compare(recipe: Any, eval_args: Any, root: Path, *, base: str, adapter: str, sft_adapter: str | None,
            router: str, buckets: Sequence[Any]) -> dict:
    """Evaluate the systems on each of ``recipe.compare_benchmarks`` (the SFT adapter's rows, before RL, on the
    last, the default split); write comparison.json / .md / .png."""
    from effreason.evaluation.compare import comparison_rows, markdown_table, plot_runs
    from effreason.jsonl import atomic_write, write_json

    common = {"instruction": recipe.instruction, "data_dir": recipe.data_dir}
    table_rows, sections, figures = [], [], {}
    for bench in recipe.compare_benchmarks:
        runs, folders = {}, {}

        def run(name: str, model_adapter: str | None, methods: dict, backend: str | None = None,
                bench: str = bench, runs: dict = runs, folders: dict = folders) -> None:
            runs[name], folders[name] = _run(eval_args, root, bench, name, base, model_adapter, methods,
                                             backend=backend, **common)

        run("base", None, {})
        run("adapter", adapter, {})
        for b in buckets:
            run(f"adapter-{b.name}", adapter, {"adapter_router": {"bucket": b.name}})
        run("routed", adapter, {"adapter_router": {"router": router}})
        if recipe.compare_sft and sft_adapter is not None and bench == recipe.compare_benchmarks[-1]:  # before RL
            run("sft", sft_adapter, {})
            for b in buckets:
                run(f"sft-{b.name}", sft_adapter, {"adapter_router": {"bucket": b.name}})
        rows = {name: _rows(folder) for name, folder in folders.items()}
        fig: dict = {"routing": routing_figures(rows["routed"], rows["base"], rows["adapter"],
                                                runs["routed"]["throughput"].get("generation_s")),
                     "buckets": {}, "base_accuracy_by_steps": steps_accuracy(rows["base"])}
        for prefix in ("adapter", "sft"):
            for b in buckets:
                if f"{prefix}-{b.name}" in rows:
                    fig["buckets"][f"{prefix}-{b.name}"] = {**bucket_figures(rows[f"{prefix}-{b.name}"], b.tokens),
                                                            "accuracy": runs[f"{prefix}-{b.name}"]["accuracy"]}
        if recipe.compare_vllm and eval_args.eval_backend == "hf" and bench == recipe.compare_benchmarks[0]:
            vllm, folder = _run(eval_args, root, bench, "routed-vllm", base, adapter, {"adapter_router": {"router": router}},
                                backend="vllm", limit=recipe.compare_vllm_limit, **common)
            other = _rows(folder)
            both = [(r, other[i]) for i, r in rows["routed"].items() if i in other]
            route = lambda row: (row.get("method_info") or {}).get("route")  # noqa: E731
            fig["vllm_routed"] = {"accuracy": vllm["accuracy"], "tokens_mean": vllm.get("tokens_mean"),
                                  "problems": len(both),
                                  "identical_completions": sum(h["completion"] == v["completion"] for h, v in both),
                                  "routes_identical": sum(route(h) == route(v) for h, v in both),
                                  "routed_to_base": sum(route(v) == "base" for _, v in both)}
        figures[bench] = fig
        bench_rows = comparison_rows(runs, baseline="adapter")
        for row in bench_rows:
            row["benchmark"] = bench
        table_rows += bench_rows
        plot_runs(runs, root / f"comparison-{bench}.png", baseline="adapter",
                  title=f"reasoning adapter on {bench}: accuracy vs tokens")
        sections.append(f"## {bench}\n\n{markdown_table(bench_rows)}\nrouting: {fig['routing']}\n")
    targets = target_figures(figures, table_rows, recipe.compare_benchmarks, buckets)
    write_json(root / "comparison.json", {"rows": table_rows, "figures": figures, "targets": targets})
    with atomic_write(root / "comparison.md") as f:
        f.write("# Reasoning adapter: base, adapter, buckets, routed\n\n" + "\n".join(sections)
                + f"\ntargets: {targets}\n")
    return {"figures": figures, "targets": targets}


def target_figures(figures: dict, rows: Sequence[dict], benches: Sequence[str], buckets: Sequence[Any]) -> dict:
    """The issue's targets, measured: adapter accuracy on the default split, bucket order and compliance, routing."""
    by = {(r["benchmark"], r["run"]): r for r in rows}
    mixed, default = benches[0], benches[-1]
    out: dict = {}
    if (default, "adapter") in by:
        out["adapter_accuracy"] = by[(default, "adapter")]["accuracy"]
        means = [figures[default]["buckets"][f"adapter-{b.name}"]["thinking_tokens_mean"] for b in buckets]
        out["bucket_means_ordered"] = all(a < b for a, b in zip(means, means[1:], strict=False))
        keep = [b for b in buckets if by[(default, f"adapter-{b.name}")]["accuracy"]
                >= by[(default, "adapter")]["accuracy"] - 0.02]
        if keep:
            fig = figures[default]["buckets"][f"adapter-{keep[0].name}"]
            out["shortest_accurate_bucket"] = keep[0].name
            out["its_within_bucket_share"] = fig["within_bucket_share"]
    routing = figures[mixed]["routing"]
    out["recall"] = routing["recall"]
    out["routed_to_base_accuracy"] = routing["routed_to_base_accuracy"]
    if (mixed, "routed") in by:
        out["routed_minus_adapter_accuracy"] = by[(mixed, "routed")]["accuracy"] - by[(mixed, "adapter")]["accuracy"]
        out["routed_tokens_mean"] = by[(mixed, "routed")]["tokens_mean"]
        out["adapter_tokens_mean"] = by[(mixed, "adapter")]["tokens_mean"]
    out["tokens_saved_share"] = routing["tokens_saved_share"]
    out["tokens_saved_ceiling_share"] = routing["tokens_saved_ceiling_share"]
    out["router_share_of_generation"] = routing["router_share_of_generation"]
    if "vllm_routed" in figures[mixed]:
        out["vllm_identical_share"] = {b: figures[b]["vllm_routed"]["identical_completions"]
                                       / figures[b]["vllm_routed"]["problems"] for b in benches
                                       if "vllm_routed" in figures[b]}
    return out
