"""Mathematical equivalence of two answers with math-verify. Runs inside sandbox workers only.

math-verify (``parse`` then ``verify``) turns LaTeX into sympy objects with its own ANTLR LaTeX
parser and compares them (numerically, symbolically, as sets, intervals, relations). Its built-in
time limit uses ``signal.alarm``, which only works in a main thread and cannot stop a computation
stuck in C code, so we switch it off here: the hard limit is the parent killing the worker process
(``effreason.grading.sandbox``).

No model output is ever given to Python's ``eval``/``exec``/``sympify``: only LaTeX extraction is
enabled (math-verify's ``ExprExtractionConfig`` would hand plain-text expressions to sympy's
``parse_expr``).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

#: Answers longer than this are not parsed at all (graded "wrong"): real answers are short, and the
#: cost of LaTeX parsing and simplification grows quickly with length.
MAX_ANSWER_CHARS = 2000
#: Answers whose brackets nest deeper than this are not parsed either (graded "wrong"): math-verify's
#: ANTLR LaTeX parser slows down sharply with nesting (measured on a fresh worker: ``(((1)))`` 0.5 s,
#: 15 nested braces 23 s), while the MATH-500 golds nest at most 2 deep.
MAX_NESTING_DEPTH = 8


def exceeds_parse_limits(answer: str) -> bool:
    """Whether an answer is too long or too deeply nested to be given to the LaTeX parser."""
    if len(answer) > MAX_ANSWER_CHARS:
        return True
    depth = 0
    for char in answer:
        if char in "([{":
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                return True
        elif char in ")]}":
            depth = max(depth - 1, 0)
    return False


@functools.cache
def _math_verify() -> Any:
    """Import math-verify once per process and silence its "timeout disabled" warnings."""
    import math_verify

    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return math_verify


@functools.cache
def _extraction_config() -> list:
    return [_math_verify().LatexExtractionConfig(boxed_match_priority=0)]


def _parse(answer: str) -> list:
    """Parse one bare answer (no delimiters) as LaTeX; [] or [string] when it does not parse."""
    mv = _math_verify()
    # Wrapping in \boxed{} makes math-verify take the whole answer as one expression; its boxed
    # normalisation also drops units, "\text{}" and "\%" spellings the way MATH golds need.
    return mv.parse("\\boxed{" + answer + "}", extraction_config=_extraction_config(),
                    parsing_timeout=None)


@functools.lru_cache(maxsize=1024)
def _parse_gold(gold: str) -> list:
    # Golds repeat (one per group of G rollouts in RL), so their parses are cached.
    return _parse(gold)


def math_equal(pred: str, gold: str) -> bool:
    """Whether ``pred`` is mathematically equal to ``gold`` (both bare LaTeX answers).

    ``verify`` is asymmetric (the gold decides e.g. whether ``x = 3`` compares as an equation or
    a value), so the gold goes first, as math-verify documents.
    """
    if exceeds_parse_limits(pred) or exceeds_parse_limits(gold):
        return False
    gold_parsed = _parse_gold(gold)
    pred_parsed = _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(_math_verify().verify(gold_parsed, pred_parsed, timeout_seconds=None))


def warm_up() -> None:
    """Import math-verify and run one comparison, so the first real request is not slow."""
    math_equal("\\frac{1}{2}", "0.5")
