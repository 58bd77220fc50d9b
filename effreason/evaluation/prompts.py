"""Problems for an eval run: load the benchmark or JSONL, apply the system prompt and chat template, tokenize."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from effreason.benchmarks import MATH_ANSWER_PREFIX
from effreason.evaluation.config import EvalConfig
from effreason.format import render_prompt, resolve_instruction, with_instruction, with_system_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One problem as the model sees it.

    Attributes:
        index: position in the benchmark (after ``--limit``), also the base of its sampling seed.
        prompt: the rendered prompt text (chat template applied).
        messages: the chat messages it was rendered from (a method may render a variant of them, e.g. the
            routed adapter's bucket instruction).
    """

    index: int
    id: str
    prompt: str
    prompt_ids: list[int]
    answer: str
    messages: list[dict] | None = None


@dataclass
class Task:
    """The problems plus the benchmark's defaults: how it is graded, the answer lead-in budget forcing forces."""

    problems: list[Problem]
    grading: str
    last_number_fallback: bool
    answer_prefix: str = MATH_ANSWER_PREFIX


def load_problems(cfg: EvalConfig, tokenizer: PreTrainedTokenizerBase) -> Task:
    """The run's problems (benchmark or ``--data`` JSONL), rendered for ``tokenizer``."""
    from effreason.benchmarks import BENCHMARKS, load_benchmark, load_jsonl_benchmark

    if cfg.benchmark is not None:
        if cfg.benchmark not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {cfg.benchmark!r}; expected one of {', '.join(BENCHMARKS)} "
                             "or --data FILE.jsonl")
        spec = BENCHMARKS[cfg.benchmark]
        dataset = load_benchmark(cfg.benchmark, data_dir=cfg.data_dir, split=cfg.split, limit=cfg.limit)
        grading, fallback, answer_prefix = spec.grading_mode, spec.last_number_fallback, spec.answer_prefix
    else:
        instruction = resolve_instruction(cfg.instruction)
        dataset = load_jsonl_benchmark(cfg.data, prompt_field=cfg.prompt_field or "problem",
                                       answer_field=cfg.answer_field, id_field=cfg.id_field,
                                       instruction=instruction, limit=cfg.limit)
        grading, fallback, answer_prefix = "math", False, MATH_ANSWER_PREFIX
    if cfg.chat_template and not tokenizer.chat_template:
        logger.warning("the tokenizer has no chat template: prompts are the plain problem text")
    problems = []
    for i, row in enumerate(dataset):
        messages = with_system_prompt(row["prompt"], cfg.system_prompt)
        if cfg.benchmark is not None:  # --data files got the instruction when they were loaded
            extra = resolve_instruction(cfg.instruction)
            messages = with_instruction(messages, extra)
        text, ids = render_prompt(tokenizer, messages, chat_template=cfg.chat_template,
                                  template_kwargs=cfg.chat_template_kwargs)
        problems.append(Problem(index=i, id=str(row["id"]), prompt=text, prompt_ids=list(ids), answer=str(row["answer"]),
                                messages=messages))
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids are not unique; pass --id-field naming a unique field (or none, to number rows)")
    return Task(problems, grading, fallback, answer_prefix)
