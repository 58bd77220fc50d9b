"""Grade completions produced elsewhere (an API, a vLLM server) with the same grader and metrics.

Input rows need a completion and a gold answer (field names configurable); ``prompt`` and ``id`` are
optional, and a boolean ``finished`` (False = cut at the length limit) is used when present.
Token figures need a tokenizer (``--tokenizer``): without one they are reported as unavailable,
never as character counts. Truncation is ``not finished`` where rows say so, else "thinking never
closed" (``effreason.format.split_thinking``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from effreason.evaluation import report, store
from effreason.evaluation.config import EvalConfig
from effreason.format import completion_in_context, split_thinking
from effreason.generation.thinking import split_text_token_counts
from effreason.jsonl import DataError, iter_jsonl, require, write_jsonl
from effreason.outputs import refuse_input_as_output

logger = logging.getLogger(__name__)


def read_completions(cfg: EvalConfig) -> list[dict]:
    """Rows ``{id, prompt, completion, answer, finished}`` from the ``--completions`` file."""
    path = cfg.completions
    prompt_field, id_field = cfg.prompt_field or "prompt", cfg.id_field or "id"
    rows = []
    for lineno, row in iter_jsonl(path):
        completion = require(row, cfg.completion_field, path, lineno, str)
        gold = require(row, cfg.answer_field, path, lineno, (str, int, float))
        finished = row.get("finished")
        if finished is not None and not isinstance(finished, bool):
            raise DataError(path, lineno, f"expected true/false, got {finished!r}", field="finished")
        item = {"id": str(row.get(id_field, len(rows))), "prompt": row.get(prompt_field),
                "completion": completion, "answer": str(gold), "finished": finished}
        for key in ("prompt_ids", "completion_ids"):  # token ids, where the generator kept them (replayed exits)
            ids = row.get(key)
            if ids is not None:
                if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
                    raise DataError(path, lineno, "expected a list of token ids", field=key)
                item[key] = ids
        rows.append(item)
        if cfg.limit is not None and len(rows) >= cfg.limit:
            break
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(path, None, f"ids are not unique; name a unique field with --id-field (now {id_field!r})")
    if not rows:
        raise DataError(path, None, "no completions")
    return rows


def grade_completions(cfg: EvalConfig) -> dict:
    """Grade ``cfg.completions`` and write samples.jsonl, results.json and summary.md to ``cfg.output``."""
    start = time.perf_counter()
    if cfg.grading is None:
        cfg.grading = "math"
    if cfg.last_number_fallback is None:
        cfg.last_number_fallback = False
    out_dir = Path(cfg.output)
    refuse_input_as_output({"--completions": cfg.completions}, store.output_files(out_dir))
    inputs = read_completions(cfg)
    replay = "early_exit" in cfg.methods  # decide where each finished completion would have exited, grade that
    if replay:
        from effreason.early_exit.method import METHOD

        cfg.methods = {"early_exit": METHOD.resolve_settings(cfg.methods["early_exit"])}
    with store.lock(out_dir):
        store.claim(out_dir, cfg.fingerprint(), cfg.to_dict(), overwrite=cfg.overwrite)
        timing = None
        if replay:
            from effreason.early_exit.replay import replay_completions

            timing = replay_completions(cfg, inputs)
        return _grade(cfg, inputs, out_dir, start, timing)


def _grade(cfg: EvalConfig, inputs: list[dict], out_dir: Path, start: float, replay_timing: dict | None = None) -> dict:
    from effreason.evaluation.runner import finish
    from effreason.grading import Grader

    tokenizer = None
    if cfg.tokenizer:
        from effreason.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    t = time.perf_counter()
    with Grader(mode=cfg.grading, timeout_s=cfg.grade_timeout_s, num_workers=cfg.grade_workers,
                last_number_fallback=cfg.last_number_fallback) as grader:
        # a string prompt that opened <think> (R1 templates): the completion starts inside the thinking
        texts = [completion_in_context(r["prompt"] if isinstance(r["prompt"], str) else None, r["completion"])
                 for r in inputs]
        grades = grader.grade_batch(texts, [r["answer"] for r in inputs])
    grading_s = time.perf_counter() - t
    rows = []
    for r, g, text in zip(inputs, grades, texts, strict=True):
        if r["finished"] is not None:
            truncated = not r["finished"]
        else:
            truncated = split_thinking(text).answer is None
        row = {"id": r["id"], "sample": 0, "budget": None, "prompt": r["prompt"], "completion": r["completion"],
               "answer": r["answer"], "extracted": g.extracted, "correct": bool(g.correct), "reason": g.reason,
               "truncated": truncated, "forced": bool(r.get("forced", False))}
        if r.get("method_info"):
            row["method_info"] = r["method_info"]
        if tokenizer is not None:
            thinking, answer = split_text_token_counts(r["completion"], tokenizer, opened=text != r["completion"])
            row.update(tokens=thinking + answer, thinking_tokens=thinking, answer_tokens=answer)
        rows.append(row)
    write_jsonl(out_dir / store.SAMPLES_FILE, rows)
    results = report.summarize(rows, has_tokens=tokenizer is not None)
    results["token_stats_available"] = tokenizer is not None
    exits = report.exit_figures(rows)
    if exits is not None:
        results["early_exit"] = exits
    replay_timing = dict(replay_timing or {})
    model = replay_timing.pop("model_path", cfg.model)
    meta = {"model": model, "tokenizer": cfg.tokenizer, "backend": "hf (replay)" if "replayed" in replay_timing else None,
            "benchmark": cfg.completions, "resumed_rows": 0}
    timing = {"model_load_s": 0.0, "generation_s": 0.0, "grading_s": grading_s, "generated_tokens": 0, "problems": 0,
              "graded_per_s": len(rows) / grading_s if grading_s else None, **replay_timing}
    return finish(out_dir, results, meta, cfg, start, timing)
