"""Prune functional steps from reasoning traces: by lowest PIR (LIMOPro, arXiv 2505.19187) or at random.

Per trace: segment the thinking, label the steps, score the functional ones with PIR (the perplexity of
the gold answer's tokens, see ``effreason.pruning.pir``), and remove the
``floor(ratio * n_functional)`` lowest-scoring functional steps (ties: the earlier step first).
Rounding down means a trace with one functional step loses it only at ``ratio = 1``; it never removes
more than the ratio asks. Progressive steps are always kept. The random baseline removes the same
number of functional steps, chosen uniformly with a per-trace seeded generator, and needs no model.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from effreason import outputs
from effreason.format import count_completion_tokens, split_thinking
from effreason.jsonl import AppendLog, DataError, atomic_directory, iter_jsonl, read_append_log, require
from effreason.outputs import describe, sidecar, weights_fingerprint
from effreason.pruning.classify import MarkerClassifier, StepClassifier, is_functional
from effreason.pruning.pir import TARGETS, ParsedTrace, parse_trace, pir_scores, scored_answer, scored_tokens
from effreason.pruning.segment import ParagraphSegmenter, Segmenter
from effreason.sources import iter_rows, parse_field_map, rename_fields

logger = logging.getLogger(__name__)

METHODS = ("pir", "random")


@dataclass(frozen=True)
class StepRecord:
    """One step of a pruned trace: stripped ``text``, ``label``, ``pir`` (None if not scored)."""

    text: str
    label: str
    pir: float | None
    removed: bool


@dataclass(frozen=True)
class PrunedTrace:
    """The result for one trace; ``asdict`` of it is one output JSONL row."""

    id: str
    completion: str
    pruned_completion: str
    steps: list[StepRecord]
    tokens_before: int
    tokens_after: int
    pir_target: str | None = None  # what PIR scored: "gold", "boxed", "answer" (None: not scored)

    def to_row(self) -> dict:
        return asdict(self)


def num_to_remove(num_functional: int, ratio: float) -> int:
    """``floor(ratio * num_functional)``; the epsilon keeps e.g. 0.3 * 10 at 3, not 2."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    return min(num_functional, math.floor(ratio * num_functional + 1e-9))


def lowest_pir(scores: dict[int, float], k: int) -> list[int]:
    """Indices of the ``k`` lowest scores (ties broken by position)."""
    return sorted(sorted(scores, key=lambda i: (scores[i], i))[:k])


def random_choice(functional: Sequence[int], k: int, rng: random.Random) -> list[int]:
    """``k`` of the ``functional`` indices, uniformly at random."""
    return sorted(rng.sample(list(functional), k))


def _count_tokens(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return count_completion_tokens(ids, tokenizer.eos_token_id, tokenizer.pad_token_id)


def prune_trace(trace_id: str, problem: str, completion: str, *, tokenizer, model=None,
                ratio: float, method: str = "pir", answer: str | None = None, answer_prefix: str | None = None,
                segmenter: Segmenter | None = None, classifier: StepClassifier | None = None, seed: int = 0,
                max_batch_tokens: int = 16384, reuse_prefix: bool = True) -> PrunedTrace:
    """Prune one trace (see the module docstring).

    Args:
        trace_id / problem / completion: the trace; ``completion`` must have a closed ``</think>``.
        tokenizer: counts tokens (and builds the scorer's inputs).
        model: the PIR scorer (any HF causal LM); unused by ``method="random"``.
        ratio: share of the functional steps to remove (rounded down).
        method: "pir" or "random".
        answer: the gold answer, whose tokens PIR scores (None: the trace's own final answer).
        answer_prefix: fixed text before the gold answer instead of the trace's own lead-in.
        segmenter / classifier: defaults ``ParagraphSegmenter()`` / ``MarkerClassifier()``.
        seed: random baseline seed (combined with ``trace_id``).
        max_batch_tokens: padded tokens per forward pass when scoring.
        reuse_prefix: reuse the full trace's KV cache for the ablations (exact; False = full passes).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "pir" and model is None:
        raise ValueError("method='pir' needs a scoring model")
    parsed: ParsedTrace = parse_trace(completion, segmenter or ParagraphSegmenter())
    texts = [s.strip() for s in parsed.steps]
    labels = (classifier or MarkerClassifier())(texts)
    functional = [i for i, label in enumerate(labels) if is_functional(label)]
    k = num_to_remove(len(functional), ratio)
    scores: dict[int, float] = {}
    target = None
    if method == "pir":
        scores, target = pir_scores(model, tokenizer, problem, parsed, functional, gold=answer,
                                    answer_prefix=answer_prefix, max_batch_tokens=max_batch_tokens,
                                    reuse_prefix=reuse_prefix)
        removed = set(lowest_pir(scores, k))
    else:
        removed = set(random_choice(functional, k, random.Random(f"{seed}:{trace_id}")))
    keep = [i not in removed for i in range(len(parsed.steps))]
    pruned = parsed.render(keep)
    steps = [StepRecord(t, lab, scores.get(i), i in removed) for i, (t, lab) in enumerate(zip(texts, labels,
                                                                                              strict=True))]
    return PrunedTrace(trace_id, completion, pruned, steps, _count_tokens(tokenizer, completion),
                       _count_tokens(tokenizer, pruned), target)


def summarize(results: Sequence[PrunedTrace]) -> dict:
    """Dataset-level numbers: token counts, ``1 - after / before``, step counts."""
    before = sum(r.tokens_before for r in results)
    after = sum(r.tokens_after for r in results)
    steps = [s for r in results for s in r.steps]
    functional = [s for s in steps if is_functional(s.label)]
    targets = [r.pir_target for r in results if r.pir_target is not None]
    return {
        "prune/traces": len(results),
        "prune/tokens_before": before,
        "prune/tokens_after": after,
        "prune/token_reduction": 1.0 - after / before if before else 0.0,
        "prune/steps": len(steps),
        "prune/steps_functional": len(functional),
        "prune/steps_removed": sum(s.removed for s in steps),
        **{f"prune/pir_target_{t}": targets.count(t) for t in TARGETS if targets},
    }


def prune_traces(rows: Sequence[dict], **kwargs) -> tuple[list[PrunedTrace], dict]:
    """Prune rows with ``id``, ``problem``, ``completion`` (and ``answer``, the gold answer, if known);
    keyword arguments go to ``prune_trace``.

    Returns:
        (results, summary) with ``summary`` from ``summarize``.
    """
    results = []
    for n, row in enumerate(rows, start=1):
        results.append(prune_trace(str(row["id"]), row["problem"], row["completion"], answer=row.get("answer"),
                                   **kwargs))
        if n % 100 == 0:
            logger.info("pruned %d / %d traces", n, len(rows))
    return results, summarize(results)


def _message_text(messages, role: str, path, line: int, field: str) -> str:
    texts = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == role]
    if not texts or not isinstance(texts[-1], str):
        raise DataError(path, line, f"no {role!r} message with string content", field=field)
    return texts[-1]


def trace_from_row(row: dict, path, line: int) -> dict:
    """Normalise one input row to ``{id, problem, completion, answer?}``.

    Accepted layouts: ``problem`` + ``completion``; ``prompt`` (string or chat messages) +
    ``completion`` (string or messages); ``messages`` (last user turn = problem, last assistant
    turn = completion). ``id`` defaults to ``<file>:<line>``.
    """
    if "messages" in row:
        messages = require(row, "messages", path, line, list)
        problem = _message_text(messages, "user", path, line, "messages")
        completion = _message_text(messages, "assistant", path, line, "messages")
    else:
        field = "problem" if "problem" in row else "prompt"
        prompt = require(row, field, path, line, (str, list))
        problem = prompt if isinstance(prompt, str) else _message_text(prompt, "user", path, line, field)
        raw = require(row, "completion", path, line, (str, list))
        completion = raw if isinstance(raw, str) else _message_text(raw, "assistant", path, line, "completion")
    if "</think>" not in completion:
        raise DataError(path, line, "no closed </think>: a truncated trace cannot be pruned",
                        field="messages" if "messages" in row else "completion")
    row_id = row.get("id")
    trace = {"id": f"{Path(path).name}:{line}" if row_id is None else str(row_id), "problem": problem,
             "completion": completion}
    answer = row.get("answer")
    if answer is not None:
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise DataError(path, line, f"expected the gold answer as a string or a number, got "
                            f"{type(answer).__name__} {answer!r:.60}", field="answer")
        trace["answer"] = str(answer)
    return trace


#: fields a trace row is read from (``load_traces(columns=...)`` maps a dataset's own columns onto them)
TRACE_FIELDS = ("id", "problem", "prompt", "completion", "messages", "answer")


def load_traces(source, *, split: str = "train", subset: str | None = None,
                columns: Mapping[str, str] | Sequence[str] | None = None, limit: int | None = None,
                check_answers: bool = False, answer_prefix: str | None = None,
                skipped: list[str] | None = None, scorer_tokenizer=None,
                scorer_context: int | None = None) -> list[dict]:
    """Read trace rows (layouts: see ``trace_from_row``) from a JSONL file, a Hugging Face dataset
    (object, ``save_to_disk`` folder, data file, or Hub id with ``split`` / ``subset``): see
    ``effreason.sources.iter_rows``.

    Args:
        columns: ``{field: column}`` (or ``["field=column", ...]``) to read a field of
            ``TRACE_FIELDS`` from a differently named column (e.g. ``problem=question``).
        limit: the first ``limit`` rows only (a large Hub set is not read in full).
        check_answers: also check that each gold ``answer`` has a place in its completion's final
            answer (what PIR scoring needs, see ``effreason.pruning.pir.scored_answer``).
        answer_prefix: the fixed lead-in PIR scoring will use, if any.
        skipped: if given, a bad row is left out, logged, and its error message appended here
            (large public sets hold some truncated traces); by default the first bad row raises.
        scorer_tokenizer / scorer_context: a trace whose scored sequence (prompt, trace, answer) has more
            tokens than ``scorer_context`` is a bad row (beyond its context a scorer's scores are noise).

    Raises:
        DataError: naming the file (or dataset and split), the line (or row) and the field, for a
            missing field or column, a completion whose thinking never closed, a repeated ``id``, or
            (``check_answers``) a gold answer that cannot be placed, or one that is not a string or
            a number, or a trace longer than ``scorer_context``.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    fields = parse_field_map(columns, TRACE_FIELDS)
    traces, seen = [], {}
    for where, line, row in itertools.islice(iter_rows(source, split=split, subset=subset), limit):
        try:
            trace = trace_from_row(rename_fields(row, fields, where, line), where, line)
            if trace["id"] in seen:  # ids key the resumable output: a repeat would be skipped as done
                raise DataError(where, line, f"id {trace['id']!r} repeats the row at {seen[trace['id']]}",
                                field=fields.get("id", "id"))
            if check_answers:
                try:
                    scored_answer(split_thinking(trace["completion"]).answer or "", trace.get("answer"),
                                  answer_prefix)
                except ValueError as e:
                    raise DataError(where, line, str(e), field=fields.get("answer", "answer")) from None
            if scorer_context is not None:
                _check_context(trace, where, line, scorer_tokenizer, scorer_context, answer_prefix,
                               fields.get("completion", "completion"))
        except DataError as e:
            if skipped is None:
                raise
            logger.warning("skipped: %s", e)
            skipped.append(str(e))
            continue
        seen[trace["id"]] = line
        traces.append(trace)
    return traces


def _check_context(trace: dict, where, line: int, tokenizer, limit: int, answer_prefix: str | None,
                   field: str) -> None:
    n = scored_tokens(tokenizer, trace["problem"], trace["completion"], gold=trace.get("answer"),
                      answer_prefix=answer_prefix)
    if n > limit:
        raise DataError(where, line, f"the trace is {n} tokens with its prompt and answer, more than the scorer's "
                        f"context of {limit}: shorten it, leave it out (--skip-bad-rows), or use a scorer with a "
                        "longer context", field=field)


def result_from_row(row: dict) -> PrunedTrace:
    """A ``PrunedTrace`` back from one output row."""
    fields = {k: row[k] for k in PrunedTrace.__dataclass_fields__ if k in row}
    return PrunedTrace(**{**fields, "steps": [StepRecord(**s) for s in row["steps"]]})


#: The command whose outputs ``prune_to_jsonl`` writes (named in the manifest ``<output>.config.json``).
COMMAND = "effreason prune"


def output_files(output: str | Path) -> dict[str, Path]:
    """The files of a prune output: ``rows`` (the JSONL), its ``manifest`` (``.config.json``), ``summary``
    (``.summary.json``) and ``lock``."""
    output = Path(output)
    return {"rows": output, "manifest": sidecar(output, ".config.json"), "summary": sidecar(output, ".summary.json"),
            "lock": output.with_name(f".{output.name}.lock")}


def run_fingerprint(*, tokenizer: str | None, scorer: str | None, ratio: float, method: str = "pir",
                    answer_prefix: str | None = None, segmenter: Segmenter | None = None,
                    classifier: StepClassifier | None = None, seed: int = 0, max_batch_tokens: int = 16384,
                    reuse_prefix: bool = True) -> dict:
    """What shapes an output row besides its trace: ``prune_trace``'s settings, and the tokenizer's and
    scorer's names and files (``effreason.outputs.weights_fingerprint``)."""
    fingerprint = {"method": method, "ratio": ratio, "tokenizer": tokenizer,
                   "tokenizer_files": weights_fingerprint(tokenizer),
                   "segmenter": describe(segmenter or ParagraphSegmenter()),
                   "classifier": describe(classifier or MarkerClassifier())}
    if method == "pir":
        fingerprint.update(scorer=scorer, scorer_files=weights_fingerprint(scorer), answer_prefix=answer_prefix,
                           max_batch_tokens=max_batch_tokens, reuse_prefix=reuse_prefix)
    else:
        fingerprint["seed"] = seed
    return fingerprint


def claim_output(output: str | Path, fingerprint: dict, *, overwrite: bool = False, write: bool = True) -> bool:
    """Make ``output`` ready for a prune run with ``fingerprint``, or refuse (``effreason.outputs.claim_output``):
    an output (or its ``.summary.json``) this command did not write, or rows made with other settings."""
    files = output_files(output)
    return outputs.claim_output(files["manifest"], files["rows"], [files["summary"]], fingerprint, command=COMMAND,
                                overwrite=overwrite, config=fingerprint, write=write)


def _check_resumed(output: Path, rows: list[dict], traces: Sequence[dict]) -> None:
    """Refuse rows pruned from another version of their trace (the input changed)."""
    by_id = {t["id"]: t for t in traces}
    for row in rows:
        trace = by_id.get(row["id"])
        for field in ("problem", "completion", "answer"):
            if trace is not None and row.get(field) != trace.get(field):
                raise outputs.ConfigMismatchError(
                    output, {f"{field} of trace {trace['id']}": (row.get(field), trace.get(field))},
                    hint="the input changed since that row was pruned: use a new --output, or --overwrite")


def prune_to_jsonl(traces: Sequence[dict], output: str | Path, *, progress: bool = False, overwrite: bool = False,
                   source: dict | None = None, **kwargs) -> dict:
    """Prune ``traces`` (rows as from ``load_traces``) into the JSONL ``output``, resumably.

    Each output row is ``PrunedTrace.to_row()`` plus ``problem`` and ``answer``, written and flushed
    as soon as it is done; traces whose id is already in ``output`` are skipped (a torn last line is
    dropped first, with a warning). Keyword arguments go to ``prune_trace``.

    ``output`` is locked while the run writes it, and claimed first (``claim_output``): a resume needs the
    same settings, tokenizer and scorer files (``run_fingerprint``) and ``source`` (what the traces were
    read from), and each resumed row the same problem, completion and answer as its trace now;
    ``overwrite`` discards an earlier run's rows.

    Returns:
        ``summarize`` of the rows of ``traces`` in ``output``, plus ``resumed_traces``.
    """
    from tqdm.auto import tqdm

    output = Path(output)
    model = kwargs.get("model")
    fingerprint = {**run_fingerprint(tokenizer=getattr(kwargs.get("tokenizer"), "name_or_path", None),
                                     scorer=getattr(model, "name_or_path", None),
                                     **{k: v for k, v in kwargs.items() if k not in ("tokenizer", "model")}),
                   **(source or {})}
    with outputs.output_lock(output_files(output)["lock"], f"the prune output {output}"):
        claim_output(output, fingerprint, overwrite=overwrite)
        rows, _ = read_append_log(output, check=lambda row: str(row["id"]))
        _check_resumed(output, rows, traces)
        done = {row["id"] for row in rows}
        todo = [t for t in traces if t["id"] not in done]
        with AppendLog(output) as out:
            for trace in tqdm(todo, desc="prune", unit="trace", disable=not progress):
                result = prune_trace(trace["id"], trace["problem"], trace["completion"], answer=trace.get("answer"),
                                     **kwargs)
                out.write([{**result.to_row(), "problem": trace["problem"], "answer": trace.get("answer")}])
        wanted = {t["id"] for t in traces}
        results = [result_from_row(r) for r in read_append_log(output)[0] if r["id"] in wanted]
    return {**summarize(results), "resumed_traces": len(traces) - len(todo)}


def is_pruned_dataset(directory: str | Path) -> bool:
    """Whether ``directory`` holds a dataset ``save_pruned_dataset`` wrote (its features name our columns)."""
    try:
        info = json.loads((Path(directory) / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    features = info.get("features") if isinstance(info, dict) else None
    return isinstance(features, dict) and {"pruned_completion", "steps", "messages"} <= set(features)


def save_pruned_dataset(output: str | Path, directory: str | Path, ids: Sequence[str] | None = None) -> int:
    """Write the rows of the pruned JSONL ``output`` as a Hugging Face dataset (``save_to_disk``).

    The dataset has the JSONL's columns plus ``messages`` (the problem as the user turn, the pruned
    completion as the assistant turn), which TRL's ``SFTTrainer`` trains on as it is
    (``dataset.select_columns(["messages"])``). Written atomically: ``directory`` is either the
    complete dataset or what was there before; ``directory`` must be missing, empty or a dataset this
    function wrote (``is_pruned_dataset``), else ``FileExistsError``.

    Args:
        ids: keep these trace ids, in this order (default: every row of ``output``).

    Returns:
        The number of rows written.
    """
    from datasets import Dataset

    rows = {r["id"]: r for _, r in iter_jsonl(output)}
    if ids is not None:
        missing = [i for i in ids if i not in rows]
        if missing:
            raise ValueError(f"{output} lacks {len(missing)} of the traces (first: {missing[0]!r})")
    chosen = [rows[i] for i in ids] if ids is not None else list(rows.values())
    data = Dataset.from_list([{**r, "messages": [{"role": "user", "content": r["problem"]},
                                                  {"role": "assistant", "content": r["pruned_completion"]}]}
                              for r in chosen])
    with atomic_directory(directory, replace=is_pruned_dataset(directory)) as tmp:
        data.save_to_disk(str(tmp))
    return len(chosen)
