"""``effreason eval leaderboard``: every test-time method over its knob, and trained models, on one chart.

    effreason eval leaderboard --model lab --benchmark lab --backend vllm --output runs/leaderboard \\
        --entry lgrpo=runs/lgrpo-lab/stage2/model --entry pir-sft=runs/sft-lab/eval/pir

Points (each an ordinary ``effreason eval`` run under ``DIR/runs/<point>``, so an interrupted
leaderboard resumes and a finished point is read back, never regenerated):

- ``base``: the model, greedy.
- ``s1``: s1 budget forcing (``effreason.generation.s1``), knob = thinking budget B.
- ``thinking_stop``: thinking-stop scaling (``effreason.generation.thinking_stop``), knob = alpha.
- ``majority``: majority@k over k complete samples (self-consistency), knob = k.
- ``short_m_at_k`` (knob = m, k fixed) and ``first_finish`` (short-1@k, knob = k): by default
  *replayed* on the majority@k run's samples: under the lockstep rule of
  ``effreason.generation.parallel`` a stopped sample is a prefix of its complete self (same seed), so
  votes, latency and compute tokens follow exactly from the complete samples; ``--parallel real``
  runs each point for real instead (the backend stops samples as it generates), at several times the cost.
  Points with fewer samples (first-finish and majority at k' < k) use the first k' samples. On vLLM,
  which seeds sample j of a prompt ``seed + j``, that is exactly the draw of a k'-sample run; HF draws a
  prompt's samples from one generator for the whole batch, so there a k'-sample run is another draw of
  the same distribution (the k-sample points match a real run exactly on both backends).
- ``early_exit`` (with ``--exit-probe DIR``): online exit at cues by a calibrated probe
  (``effreason.early_exit``), knob = delta; on vLLM its features come from an HF copy of the model.
- ``steering`` (with ``--steering DIR``): a steering vector (``effreason.steering``), knob = gamma
  (default: 0.5, 0.75 and 1 times the vector's chosen strength); on vLLM each strength starts its own
  engine (the steered model is fixed per engine).
- ``--entry NAME=PATH``: a trained model or artifact: an eval run folder (its ``results.json`` is
  read; it must be on the same benchmark and problems) or a model folder / hub id (evaluated greedy).

All generated points share one loaded model (one vLLM engine, started with every method's logits
processor). Output: ``leaderboard.json`` (rows with ``method``, ``setting``, ``accuracy``,
``tokens_mean``; parallel methods add ``latency_tokens_mean`` and ``compute_tokens_mean``, and their
``tokens_mean`` is the compute), ``leaderboard.md`` and ``leaderboard.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path

from effreason.evaluation import metrics, store
from effreason.evaluation.config import EvalConfig
from effreason.format import THINK_END

logger = logging.getLogger(__name__)

COMMAND = "effreason eval leaderboard"
CONFIG_FILE, ROWS_FILE, TABLE_FILE, PLOT_FILE = ("leaderboard_config.json", "leaderboard.json", "leaderboard.md",
                                                 "leaderboard.png")
PARALLEL = ("majority", "short_m_at_k", "first_finish")
#: Settings every point of one leaderboard shares (a change is another leaderboard: refused, or --overwrite).
SHARED_SETTINGS = ("model", "benchmark", "split", "limit", "backend", "dtype", "max_new_tokens", "seed",
                   "k", "temperature", "parallel")
#: Knobs on the lab (the default overthinker thinks ~145 tokens greedy; its concise traces ~40).
LAB_S1_BUDGETS, LAB_ALPHAS = (32, 48, 64, 96, 128), (1.0, 2.0, 3.0, 4.0, 6.0)


def _numbers(cast: type, low: float, what: str):
    """An argparse type: comma-separated ``cast`` values, each >= ``low``."""

    def parse(text: str) -> list:
        try:
            values = [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            values = []
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
        return values

    return parse


_ints, _floats = _numbers(int, 1, "integers >= 1"), _numbers(float, 0, "numbers >= 0")
_signed_floats = _numbers(float, -math.inf, "numbers")


def _entry(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (an eval run folder or a model), got {text!r}")
    return name.strip(), path.strip()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the base model: hub id, local path, or `lab`")
    p.add_argument("--benchmark", required=True, help="benchmark name (lab, gsm8k, math500, ...)")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", help="folder of offline benchmark copies")
    p.add_argument("--limit", type=int, help="first N problems only")
    p.add_argument("--output", required=True, help="output folder (re-run with it to resume)")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier leaderboard in --output")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    p.add_argument("--dtype")
    p.add_argument("--device")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--s1-budgets", type=_ints, help="s1 thinking budgets (default: 32,48,64,96,128 on the lab, "
                   "1/8, 1/4, 1/2 of --max-new-tokens otherwise)")
    p.add_argument("--alphas", type=_floats, help="thinking-stop log-odds boosts (default: 1,2,3,4,6)")
    p.add_argument("-k", "--samples", dest="k", type=int, default=8, help="parallel samples k (default 8)")
    p.add_argument("--short-m", type=_ints, default=[2, 3, 5], help="short-m@k values of m (default 2,3,5; m=1 is "
                   "first-finish)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature of the parallel methods "
                   "(default 0.7)")
    p.add_argument("--parallel", choices=["replay", "real"], default="replay",
                   help="short-m@k / first-finish points replayed on the majority@k samples (default) or run for real")
    p.add_argument("--exit-probe", metavar="DIR", help="add early exit with this probe (recipes/early_exit.py, built "
                   "on --model), knob = delta")
    p.add_argument("--exit-deltas", type=_floats, help="early-exit deltas (default: every delta the probe was "
                   "calibrated for)")
    p.add_argument("--steering", metavar="DIR", help="add a steering vector (recipes/steering.py, built on --model), "
                   "knob = gamma")
    p.add_argument("--steering-gammas", type=_signed_floats, help="steering strengths (default: 0.5, 0.75, 1 x the "
                   "vector's gamma, to 4 significant digits; write --steering-gammas=-1,0.5 when the first is negative)")
    p.add_argument("--entry", type=_entry, action="append", default=[], metavar="NAME=PATH",
                   help="add a trained model or an eval run folder (repeat)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def plan(args: argparse.Namespace, max_new_tokens: int) -> list[tuple[str, object, dict]]:
    """``(method, setting, EvalConfig overrides)`` of every point the leaderboard generates."""
    lab = args.benchmark.startswith("lab")
    budgets = args.s1_budgets or (list(LAB_S1_BUDGETS) if lab else [max_new_tokens // d for d in (8, 4, 2)])
    points: list[tuple[str, object, dict]] = [("base", None, {})]
    points += [("s1", b, {"methods": {"s1": {"thinking_budget": b}}}) for b in budgets if b <= max_new_tokens]
    points += [("thinking_stop", a, {"methods": {"thinking_stop": {"alpha": a}}}) for a in args.alphas or LAB_ALPHAS]
    if getattr(args, "exit_probe", None):
        deltas = args.exit_deltas
        if not deltas:
            from effreason.generation.methods import available_methods

            deltas = available_methods()["early_exit"].calibrated_deltas(args.exit_probe)
        points += [("early_exit", d, {"methods": {"early_exit": {"probe": args.exit_probe, "delta": d}}})
                   for d in deltas]
    if getattr(args, "steering", None):
        gammas = args.steering_gammas
        if not gammas:
            from effreason.generation.methods import available_methods

            chosen = available_methods()["steering"].chosen_gamma(args.steering)
            # 4 significant digits (labels on the chart), each strength once, none 0
            gammas = sorted({float(f"{f * chosen:.4g}") for f in (0.5, 0.75, 1.0)} - {0.0}, key=abs)
        points += [("steering", g, {"methods": {"steering": {"vector": args.steering, "gamma": g}}}) for g in gammas]
    sampled = {"samples": args.k, "temperature": args.temperature}
    points.append(("majority", args.k, sampled))
    if args.parallel == "real":
        points += [("short_m_at_k", m, {**sampled, "methods": {"short_m_at_k": {"m": m}}})
                   for m in args.short_m if 1 < m <= args.k]
        points += [("first_finish", k, {"samples": k, "temperature": args.temperature,
                                        "methods": {"first_finish": {}}}) for k in _first_finish_ks(args.k)]
    return points


def _first_finish_ks(k: int) -> list[int]:
    return sorted({j for j in (2, 4, 8, 16, 32, 64) if j < k} | {k})


def _point_name(method: str, setting: object) -> str:
    return method if setting is None else f"{method}-{setting}"


def run(args: argparse.Namespace) -> int:
    from effreason.outputs import check_output_path, claim_output, output_lock

    start = time.perf_counter()
    out = check_output_path(args.output, "--output")
    if args.k < 2:
        raise ValueError(f"--samples k must be >= 2 for the parallel methods, got {args.k}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    base_cfg = _config(args, out / "runs" / "base", {})
    points = plan(args, base_cfg.max_new_tokens)
    for method, setting, over in points:  # every setting and entry checked before anything loads
        _config(args, out / "runs" / _point_name(method, setting), over)
    found = check_entries(args)
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "output", "overwrite", "progress",
                                                                 "command", "eval_command", "debug")}
    # What makes points comparable; knob lists and entries may change between runs (points are reused).
    same = {k: settings[k] for k in SHARED_SETTINGS}
    with output_lock(out / store.LOCK_FILE, f"the leaderboard {out}"):
        claim_output(out / CONFIG_FILE, out / ROWS_FILE, [out / TABLE_FILE, out / PLOT_FILE], same,
                     command=COMMAND, overwrite=args.overwrite, config=json.loads(json.dumps(settings)),
                     hint="use a new --output folder, or --overwrite to discard the old leaderboard")
        rows = _generate(args, out, points)
        if args.parallel == "replay":
            rows += replayed(args, out / "runs" / _point_name("majority", args.k))
        rows += _entries(args, out, found)
        _write(out, rows, args)
    print(markdown(rows))
    print(f"wrote {out / ROWS_FILE}, {out / TABLE_FILE}, {out / PLOT_FILE} in {time.perf_counter() - start:.0f} s")
    return 0


def _config(args: argparse.Namespace, output: Path, over: dict, model: str | None = None) -> EvalConfig:
    return EvalConfig(output=str(output), benchmark=args.benchmark, split=args.split, data_dir=args.data_dir,
                      limit=args.limit, model=model or args.model, backend=args.backend, dtype=args.dtype,
                      device=args.device, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                      seed=args.seed, progress=args.progress, **over)


def _generate(args: argparse.Namespace, out: Path, points: list[tuple[str, object, dict]]) -> list[dict]:
    """Run (or read back) each point on one loaded backend."""
    from effreason.evaluation.runner import run_eval

    rows, loaded = [], []

    def backend():  # loaded when the first point has work to do; a finished point is only read back
        if not loaded:
            loaded.append(_load_backend(_config(args, out / "runs" / "base", {})))
        return loaded[0]

    try:
        for method, setting, over in points:
            cfg = _config(args, out / "runs" / _point_name(method, setting), over)
            logger.info("leaderboard point %s %s", method, setting)
            own = cfg.backend == "vllm" and _changes_the_engine(cfg)  # its own engine, started with its model
            rows.append(leaderboard_row(method, setting, run_eval(cfg, backend=None if own else backend), cfg.output))
    finally:
        for b in loaded:
            b.close()
    return rows


def _changes_the_engine(cfg: EvalConfig) -> bool:
    """Whether a point's methods start vLLM with another model (a steering vector), so it cannot share the engine."""
    from effreason.generation.methods import VLLMEngineMethod, available_methods

    available = available_methods()
    return any(isinstance(available[name], VLLMEngineMethod) for name in cfg.methods)


def _load_backend(cfg: EvalConfig):
    """The model once, for every point; a vLLM engine starts with every method's logits processor."""
    from effreason.evaluation.prompts import load_problems
    from effreason.generation.backends import Sampling, build_backend
    from effreason.generation.thinking_stop import METHOD as THINKING_STOP
    from effreason.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    longest = max(len(p.prompt_ids) for p in load_problems(cfg, tokenizer).problems)
    processors = THINKING_STOP.vllm_logits({"alpha": 0.0}, tokenizer).processors if cfg.backend == "vllm" else ()
    return build_backend(cfg.backend, cfg.model, sampling=Sampling(0.0, 1.0, cfg.seed), dtype=cfg.dtype,
                         device=cfg.device, batch_size=cfg.batch_size,
                         max_model_len=longest + cfg.max_new_tokens + cfg.budget_answer_tokens + 48,
                         processors=processors)


def leaderboard_row(method: str, setting: object, results: dict, run: str) -> dict:
    """One leaderboard row from a run's results (parallel methods: the vote, latency and compute tokens)."""
    row = {"method": method, "setting": setting, "n": results["n"], "run": str(run)}
    par = results.get("parallel")
    if method in PARALLEL and par:
        row.update(accuracy=par["accuracy"], tokens_mean=par["compute_tokens_mean"],
                   latency_tokens_mean=par["latency_tokens_mean"], compute_tokens_mean=par["compute_tokens_mean"],
                   k=par["k"], m=par["m"])
    else:
        row.update(accuracy=results["accuracy"], tokens_mean=results["tokens_mean"])
    return row


def replayed(args: argparse.Namespace, run: Path) -> list[dict]:
    """short-m@k (each m of ``args.short_m``), first-finish and majority@k' (k' <= k) from the samples of a
    majority@k eval run (``run``)."""
    from effreason.models import load_tokenizer

    rows, _ = store.read_samples(run / store.SAMPLES_FILE)
    tokenizer = load_tokenizer(args.model)
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("budget") is None:
            by_problem[str(r["id"])].append(r)
    samples = [sorted(rs, key=lambda r: r["sample"]) for rs in by_problem.values()]
    ends = [[_first_thinking_end(r, tokenizer) for r in rs] for rs in samples]
    n = len(samples)
    note = f"{run} (replayed)"
    out_rows = []
    for m in args.short_m:
        if 1 < m <= args.k:
            out_rows.append(_replay_row("short_m_at_k", m, samples, ends, args.k, m, n, note))
    for k in _first_finish_ks(args.k):
        out_rows.append(_replay_row("first_finish", k, samples, ends, k, 1, n, note))
    for k in _first_finish_ks(args.k):
        if k < args.k:
            out_rows.append(_replay_row("majority", k, samples, ends, k, None, n, note))
    return out_rows


def _first_thinking_end(row: dict, tokenizer) -> int | None:
    """Tokens through the first ``</think>`` of a samples.jsonl row (``None``: never finished thinking).

    Exact when the completion holds at most one ``</think>`` (the row's ``thinking_tokens``, counted on
    the generated ids). With several, the text up to the first is re-tokenized, which for BPE
    vocabularies can differ from the generated ids by a token, so such a replay is an estimate.
    """
    text = row["completion"]
    if THINK_END not in text:
        return None if row["truncated"] else row["tokens"]
    if text.count(THINK_END) == 1:
        return row["thinking_tokens"]  # through the last = the first
    cut = text.index(THINK_END) + len(THINK_END)
    return len(tokenizer(text[:cut], add_special_tokens=False)["input_ids"])


def _replay_row(method: str, setting: int, samples: list[list[dict]], ends: list[list[int | None]], k: int,
                m: int | None, n: int, run: str) -> dict:
    """One replayed point: the first ``k`` samples of each problem as ``method`` would have left them (the
    rows a real run writes), scored by ``report.parallel_figures`` like any k-sample run."""
    from effreason.evaluation.report import parallel_figures
    from effreason.generation.parallel import counted_samples, stop_length

    rows = []
    for problem_rows, row_ends in zip(samples, ends, strict=True):
        problem_rows, row_ends = problem_rows[:k], row_ends[:k]
        counted = set(counted_samples(row_ends, m)) if m else set()
        limit = stop_length(row_ends, m) if m else None
        for i, r in enumerate(problem_rows):
            if m:  # stopped at T unless counted (or it had ended by itself by then)
                stopped = bool(counted) and i not in counted and (r["truncated"] or r["tokens"] > limit)
                r = {**r, "tokens": min(r["tokens"], limit) if stopped else r["tokens"],
                     "method_info": {method: {"k": k, "m": m, "counted": i in counted, "thinking_end": row_ends[i]}}}
            rows.append(r)
    par = parallel_figures(rows)
    return {"method": method, "setting": setting, "n": n, "run": run, "accuracy": par["accuracy"],
            "tokens_mean": par["compute_tokens_mean"], "latency_tokens_mean": par["latency_tokens_mean"],
            "compute_tokens_mean": par["compute_tokens_mean"], "k": k, "m": m}


def check_entries(args: argparse.Namespace) -> dict[str, dict | None]:
    """Each ``--entry``'s eval results (an eval run folder on the same problems) or ``None`` (a model, checked
    to exist); before anything runs."""
    from effreason.models import check_model_source

    found: dict[str, dict | None] = {}
    for name, path in args.entry:
        if name in found or name in PLOT_ORDER:
            raise ValueError(f"--entry {name}={path}: the name {name!r} is taken; give each entry its own name")
        results_file = Path(path) / store.RESULTS_FILE
        if not results_file.is_file():
            check_model_source(path, f"--entry {name}")
            found[name] = None
            continue
        results = json.loads(results_file.read_text(encoding="utf-8"))
        cfg = results.get("config", {})
        ours = (args.benchmark, args.split, args.limit)
        theirs = (cfg.get("benchmark"), cfg.get("split"), cfg.get("limit"))
        if theirs != ours:
            raise ValueError(f"--entry {name}={path}: that run is on benchmark/split/limit {theirs}, the leaderboard "
                             f"on {ours}: evaluate it on the same problems")
        found[name] = results
    return found


def _entries(args: argparse.Namespace, out: Path, found: dict[str, dict | None]) -> list[dict]:
    """Trained models and artifacts: an eval run folder's results, or the model evaluated greedy."""
    from effreason.evaluation.runner import run_eval

    rows = []
    for name, path in args.entry:
        results = found[name]
        if results is None:
            cfg = _config(args, out / "runs" / f"entry-{name}", {}, model=path)
            results, path = run_eval(cfg), cfg.output
        rows.append(leaderboard_row(name, None, results, path))
    return rows


def markdown(rows: list[dict]) -> str:
    """The leaderboard as a markdown table, best accuracy first within equal tokens."""
    lines = ["| method | setting | accuracy | tokens (mean) | latency tokens | compute tokens | Pareto |",
             "|---|---|---|---|---|---|---|"]
    frontier = {(p.label) for p in metrics.pareto_frontier([metrics.Point(_label(r), _x(r), r["accuracy"])
                                                            for r in rows])}
    for r in sorted(rows, key=lambda r: (PLOT_ORDER.get(r["method"], 9), r["method"], _x(r))):
        lat = r.get("latency_tokens_mean")
        comp = r.get("compute_tokens_mean")
        lines.append(f"| {r['method']} | {'' if r['setting'] is None else r['setting']} | {r['accuracy']:.3f} | "
                     f"{r['tokens_mean']:.1f} | {'' if lat is None else f'{lat:.1f}'} | "
                     f"{'' if comp is None else f'{comp:.1f}'} | {'*' if _label(r) in frontier else ''} |")
    lines.append("")
    lines.append("tokens: mean completion tokens per problem; for parallel methods the compute (all k samples as far "
                 "as they got), latency = the longest sample that counted. `*` = on the Pareto frontier of accuracy "
                 "vs latency tokens (parallel) or tokens (the others).")
    return "\n".join(lines) + "\n"


PLOT_ORDER = {"base": 0, "s1": 1, "thinking_stop": 2, "majority": 3, "short_m_at_k": 4, "first_finish": 5}


def _label(r: dict) -> str:
    return r["method"] if r["setting"] is None else f"{r['method']}={r['setting']}"


def _x(r: dict) -> float:
    """Where a row sits on the token axis: latency tokens for parallel methods, else tokens."""
    return r.get("latency_tokens_mean") or r["tokens_mean"]


def _write(out: Path, rows: list[dict], args: argparse.Namespace) -> None:
    from effreason.jsonl import atomic_write, write_json

    write_json(out / ROWS_FILE, rows)
    with atomic_write(out / TABLE_FILE) as f:
        f.write(markdown(rows))
    plot(rows, out / PLOT_FILE, title=f"{args.model} on {args.benchmark}: accuracy vs tokens")


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Each method's points and Pareto curve; parallel methods twice, at latency (solid) and compute (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from effreason.evaluation.compare import MARK

    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    fig, ax = plt.subplots(figsize=(9, 6), dpi=150)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = sorted(by_method, key=lambda name: (PLOT_ORDER.get(name, 9), name))
    for i, name in enumerate(order):
        color, rs = colors[i % len(colors)], by_method[name]
        parallel = any(r.get("latency_tokens_mean") is not None for r in rs)
        single = "*" if name == "base" else "D"  # the base model, and trained models (one point each)
        series = [("latency", "latency_tokens_mean", "-", "o"), ("compute", "compute_tokens_mean", ":", "^")] \
            if parallel else [("", "tokens_mean", "-", "o" if len(rs) > 1 else single)]
        for what, key, style, marker in series:
            pts = [metrics.Point(str(r["setting"]), r[key], r["accuracy"]) for r in rs]
            ax.scatter([p.tokens for p in pts], [p.accuracy for p in pts], color=color, marker=marker,
                       s=28 if marker in "o^" else 120, zorder=3 if marker in "o^" else 4,
                       facecolors=color if what != "compute" else "none", edgecolors=color if marker in "o^" else "black",
                       label=name if len(rs) == 1 and not parallel else None)
            front = metrics.pareto_frontier(pts)
            if len(pts) == 1 and not parallel:
                continue
            ax.plot([p.tokens for p in front], [p.accuracy for p in front], style, color=color, lw=1.3,
                    label=f"{name} ({what})" if what else name)
            if len(pts) > 1:
                for p in pts:
                    ax.annotate(p.label, (p.tokens, p.accuracy), xytext=(3, 3), textcoords="offset points",
                                fontsize=6, color=color)
    ax.set_xlabel("mean tokens per problem (parallel methods: latency = longest counted sample; compute = all k)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.03, 1.05)
    ax.grid(alpha=0.3)
    ax.set_xscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, metadata={"Creator": MARK})
    plt.close(fig)
