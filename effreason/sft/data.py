"""SFT data for ``recipes/sft.py``: traces in, pruned variants, prompt-completion datasets out.

Stages write under ``<output_dir>/data/`` and are skipped when their file exists, so an interrupted
run resumes (pruning itself resumes trace by trace, ``effreason.pruning.prune_to_jsonl``).
``data/settings.json`` records the settings the data was built with; a re-run with other data
settings in the same directory is refused instead of silently mixing the two.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset

from effreason.format import (
    THINK_START,
    chat_prompt,
    prompt_opens_thinking,
    render_prompt,
    resolve_instruction,
    with_instruction,
)
from effreason.jsonl import read_jsonl, write_json, write_jsonl

logger = logging.getLogger(__name__)

#: completion field of each variant's rows
COMPLETION_FIELD = {"unpruned": "completion", "pir": "pruned_completion", "random": "pruned_completion"}


def lab_trace_rows(num: int, *, style: str = "verbose", seed: int = 0) -> list[dict]:
    """Traces of the first ``num`` lab train problems: rows ``{id, problem, completion, answer}``.

    Args:
        style: a name in ``effreason.lab.traces.STYLES`` (``verbose``, ``concise``, ``slippy``).
        seed: seed of the trace writer (which checks and errors each trace gets).
    """
    from effreason.lab.datasets import lab_problems
    from effreason.lab.traces import STYLES, write_trace

    trace_style = STYLES[style]
    rng = random.Random(seed)
    return [{"id": f"lab/train/{i}", "problem": p.text(), "completion": write_trace(p, trace_style, rng).text,
             "answer": str(p.answer)} for i, p in enumerate(lab_problems("train")[:num])]


def check_settings(data_dir: Path, settings: dict) -> None:
    """Record ``settings`` in ``data_dir/settings.json``, or refuse if the directory holds data built
    with other settings.

    Raises:
        ValueError: naming the settings that differ.
    """
    path = data_dir / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise ValueError(f"{data_dir} holds data built with other settings ({', '.join(changed)}: "
                             f"{[before.get(k) for k in changed]} then, {[settings.get(k) for k in changed]} now); "
                             "use a new output_dir, or delete that folder to rebuild")
        return
    write_json(path, settings)


def build_traces(path: Path, *, traces: str, num_traces: int, style: str, seed: int, split: str = "train",
                 subset: str | None = None, columns: Sequence[str] | None = None,
                 skip_bad_rows: bool = False) -> list[dict]:
    """The trace rows: written to ``path`` once (lab traces, or the first rows of your traces: a JSONL
    file or a dataset, read with ``effreason.pruning.load_traces``), then read back."""
    from effreason.pruning import load_traces

    if not path.is_file():
        if traces == "lab":
            rows = lab_trace_rows(num_traces, style=style, seed=seed)
        else:
            skipped = [] if skip_bad_rows else None
            # errors name the file (or dataset), line (or row) and field
            rows = load_traces(traces, split=split, subset=subset, columns=columns, limit=num_traces or None,
                               check_answers=True, skipped=skipped)
            if not rows:
                raise ValueError(f"no usable trace in {traces}")
        write_jsonl(path, rows)
        logger.info("wrote %d traces to %s", len(rows), path)
    return read_jsonl(path)


def prune_variant(rows: Sequence[dict], path: Path, *, method: str, ratio: float, tokenizer, model=None,
                  segmenter: str, answer_prefix: str | None, max_batch_tokens: int, seed: int,
                  markers: str | None = None) -> dict:
    """Prune ``rows`` into ``path`` with ``method`` (``pir`` or ``random``), resumably; the same code
    as ``effreason prune``. ``markers``: a marker-phrase file (``load_marker_config``). Writes
    ``<path>.summary.json`` and returns the summary."""
    from effreason.pruning import (
        LabSegmenter,
        MarkerClassifier,
        ParagraphSegmenter,
        load_marker_config,
        prune_to_jsonl,
    )

    seg = LabSegmenter() if segmenter == "lab" else ParagraphSegmenter()
    classifier = MarkerClassifier(load_marker_config(markers)) if markers else MarkerClassifier()
    summary = prune_to_jsonl(rows, path, tokenizer=tokenizer, model=model, ratio=ratio, method=method,
                             answer_prefix=answer_prefix, segmenter=seg, classifier=classifier, seed=seed,
                             max_batch_tokens=max_batch_tokens, progress=True)
    summary = {**summary, "method": method, "ratio": ratio}
    write_json(f"{path}.summary.json", summary)
    logger.info("%s pruning: %d -> %d tokens (%.1f%% fewer)", method, summary["prune/tokens_before"],
                summary["prune/tokens_after"], 100 * summary["prune/token_reduction"])
    return summary


def read_variant(path: Path, rows: Sequence[dict]) -> list[dict]:
    """The pruned rows of ``path`` for the traces ``rows``, in their order."""
    by_id = {r["id"]: r for r in read_jsonl(path)}
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} of the traces (first: {missing[0]!r}); delete it to re-prune")
    return [by_id[r["id"]] for r in rows]


def sft_dataset(rows: Sequence[dict], completion_field: str, *, instruction: str | None = None,
                system_prompt: str | None = None, tokenizer=None,
                row_instructions: Sequence[str | None] | None = None) -> Dataset:
    """Prompt-completion rows for TRL's ``SFTTrainer`` (loss on the completion only).

    The prompt is rebuilt from ``problem`` with ``effreason.format.chat_prompt``, as the eval suite
    builds it, so the model is trained on the prompts it is evaluated with. Rows are conversational,
    unless ``tokenizer``'s chat template would not train on the completion as written: R1-Distill's
    drops everything up to ``</think>`` from assistant turns and opens ``<think>`` only in the
    generation prompt, so TRL would train on the answer alone. Then rows are text: the rendered
    prompt (as at generation) and the completion after the ``<think>`` that prompt opened.

    Args:
        completion_field: ``completion`` (unpruned) or ``pruned_completion``.
        instruction: appended to each problem (``math`` = the boxed-answer instruction).
        tokenizer: the tokenizer of the model being trained (None: conversational rows).
        row_instructions: per row, text appended after ``instruction`` (``None``: nothing), e.g. the reasoning
            adapter's length-bucket instruction.
    """
    extra = resolve_instruction(instruction)
    per_row = list(row_instructions) if row_instructions is not None else [None] * len(rows)
    if len(per_row) != len(rows):
        raise ValueError(f"got {len(per_row)} row instructions for {len(rows)} rows")
    data = [{"prompt": with_instruction(chat_prompt(row["problem"], instruction=extra, system_prompt=system_prompt),
                                        own),
             "completion": [{"role": "assistant", "content": row[completion_field]}]}
            for row, own in zip(rows, per_row, strict=True)]
    if tokenizer is None or not tokenizer.chat_template or all(_template_keeps(tokenizer, r) for r in data):
        return Dataset.from_list(data)
    logger.info("the chat template does not keep completions as written (thinking dropped or <think> opened "
                "in the prompt): SFT rows are the rendered prompt text and the completion text")
    return Dataset.from_list([_text_row(tokenizer, r["prompt"], r["completion"][0]["content"]) for r in data])


def _template_keeps(tokenizer, row: dict) -> bool:
    """Whether the chat template renders ``row``'s completion whole, right after the generation prompt."""
    head = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    return full.startswith(head) and row["completion"][0]["content"].strip() in full[len(head):]


def _text_row(tokenizer, messages: list[dict], completion: str) -> dict:
    prompt, _ = render_prompt(tokenizer, messages)
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos) and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]:
        prompt = prompt[len(bos):]  # TRL tokenizes text rows with the special tokens: no second BOS
    if prompt_opens_thinking(prompt) and completion.lstrip().startswith(THINK_START):
        completion = completion.lstrip()[len(THINK_START):].lstrip()
    return {"prompt": prompt, "completion": completion}  # TRL appends the EOS token to text completions
