"""Concise / verbose pairs of the same problem, the raw material of a steering direction.

Three sources:

- ``read_pairs_jsonl``: your pairs (ASC, arXiv 2507.04742: a concise CoT written by another model and
  the target model's own verbose one for ~100 MATH problems). Rows ``{"problem", "concise", "verbose"}``
  (``id`` optional); the prompt is rendered as the eval renders it (chat template, instruction).
- ``self_pairs``: the model's own samples (Efficiency Steering, arXiv 2506.15647): per problem, its
  shortest and longest *correct* completion, graded with the shared grader.
- ``lab_pairs``: the lab default, pairs that end at the decision the vector must move. The verbose
  writer's trace of a train problem (``effreason.lab.traces``) is cut twice around one of its step
  checks: right before it (the verbose member: what comes next is the re-check) and right after it
  (the concise member: what comes next is the next step). Measured on the shipped overthinker (100 dev
  problems, greedy, layer 3): whole concise and verbose traces end alike (``... </think> the answer is
  \\boxed{ v }``) and no layer or strength of their vector lowered the tokens; the concise and the verbose
  writer's traces cut after the same step (the contexts differ by every earlier check) gave at best
  0.64x the tokens at 0.99 accuracy; these decision pairs give the concise writer's length, 0.28x, at
  1.00. (Real CoTs are long enough that a whole trace's final state carries the habit, which is what
  ASC uses.)

Each pair is token ids: the prompt, then each completion tokenised whole after it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from effreason.jsonl import DataError, iter_jsonl, require

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """A problem's prompt with a concise and a verbose completion (token ids, prompt excluded)."""

    id: str
    prompt_ids: tuple[int, ...]
    concise_ids: tuple[int, ...]
    verbose_ids: tuple[int, ...]


def _completion_ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def render(tokenizer: Any, problem: str, instruction: str | None = None) -> tuple[int, ...]:
    """A problem's prompt ids as the eval renders them (chat template with the generation prompt, instruction)."""
    from effreason.format import chat_prompt, render_prompt, resolve_instruction

    return tuple(render_prompt(tokenizer, chat_prompt(problem, instruction=resolve_instruction(instruction)))[1])


def read_pairs_jsonl(path: str, tokenizer: Any, *, instruction: str | None = None, limit: int | None = None) -> list[Pair]:
    """Pairs from a JSONL file of ``{"problem", "concise", "verbose"}`` rows (``id`` optional).

    Raises:
        DataError: a malformed line or a missing / empty field, naming the file and line; no rows.
    """
    pairs = []
    for lineno, row in iter_jsonl(path):
        problem = require(row, "problem", path, lineno, str)
        concise, verbose = require(row, "concise", path, lineno, str), require(row, "verbose", path, lineno, str)
        for name, text in (("problem", problem), ("concise", concise), ("verbose", verbose)):
            if not text.strip():
                raise DataError(path, lineno, f"{name} is empty", field=name)
        if concise == verbose:
            raise DataError(path, lineno, "concise and verbose are the same text: a pair must differ", field="concise")
        pairs.append(Pair(str(row.get("id", lineno)), render(tokenizer, problem, instruction),
                          _completion_ids(tokenizer, concise), _completion_ids(tokenizer, verbose)))
        if limit and len(pairs) >= limit:
            break
    if not pairs:
        raise DataError(path, None, "no pairs")
    return pairs


def lab_pairs(tokenizer: Any, num: int, seed: int) -> list[Pair]:
    """``num`` decision pairs from the verbose writer's traces of lab train problems.

    For a step ``k`` that the writer checks, the verbose member ends right after step ``k`` (the next
    thing written is the check: the overthinking), the concise member right after that check (the next
    thing is step ``k + 1``: going on). Same problem, same trace, one check apart, so the difference of
    their last states is the re-check-or-go-on decision itself (see the module docstring for why).
    """
    from effreason.format import THINK_START
    from effreason.lab.datasets import lab_problems
    from effreason.lab.traces import PROGRESSIVE, VERBOSE, write_trace

    rng = random.Random(seed)
    problems = lab_problems("train")
    order = list(range(len(problems)))
    rng.shuffle(order)
    pairs = []
    for i in order:
        if len(pairs) >= num:
            break
        segments = write_trace(problems[i], VERBOSE, rng).segments
        checks = [j for j in range(1, len(segments))
                  if segments[j][0] in ("verification", "recompute") and segments[j - 1][0] == PROGRESSIVE]
        if not checks:  # the writer checked no step of this trace (rare)
            continue
        j = rng.choice(checks)
        go_on = f"{THINK_START} " + " ".join(text for _, text in segments[: j + 1])
        re_check = f"{THINK_START} " + " ".join(text for _, text in segments[:j])
        pairs.append(Pair(f"lab/train/{i}", render(tokenizer, problems[i].text()), _completion_ids(tokenizer, go_on),
                          _completion_ids(tokenizer, re_check)))
    return pairs


def self_pairs(backend: Any, grader: Any, problems: Sequence[Any], *, samples: int, max_new_tokens: int,
               seed: int) -> tuple[list[Pair], dict]:
    """Per problem, the model's shortest and longest correct completion among ``samples`` samples.

    ``problems``: ``effreason.evaluation.prompts.Problem`` objects (prompt ids and gold answer). A problem
    with fewer than two correct samples, or correct samples of one length only, gives no pair.

    Returns:
        the pairs, and counts (problems, samples, correct, pairs).
    """
    pairs, correct_total = [], 0
    gens = backend.generate([p.prompt_ids for p in problems], n=samples, max_new_tokens=max_new_tokens,
                            seeds=[seed + p.index for p in problems])
    for problem, samples_of in zip(problems, gens, strict=True):
        right = [g for g in samples_of if g.finished and grader.grade(g.text, problem.answer).correct]
        correct_total += len(right)
        if len(right) < 2:
            continue
        short, long = min(right, key=lambda g: g.num_tokens), max(right, key=lambda g: g.num_tokens)
        if short.num_tokens == long.num_tokens:
            continue
        pairs.append(Pair(problem.id, tuple(problem.prompt_ids), tuple(short.token_ids), tuple(long.token_ids)))
    counts = {"problems": len(problems), "samples": len(problems) * samples, "correct": correct_total,
              "pairs": len(pairs)}
    logger.info("self pairs: %d of %d problems have two correct samples of different lengths", len(pairs), len(problems))
    return pairs, counts
