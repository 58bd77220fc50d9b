"""The project's one correctness check, shared by RL rewards and evaluation.

Grading a completion against a gold answer:

1. Thinking is stripped (``effreason.format.split_thinking``); thinking that never closed is
   ``"truncated"``.
2. The final answer is extracted (``extract.extract_from_text``); none is ``"no_answer"``, and so
   is an answer cut off inside a ``\\boxed{`` or a reopened ``<think>`` (the decisions on lenient
   and hostile answers are listed in ``effreason.grading.extract``).
3. Equal comparison keys (``extract.answer_key``: blanks, ``$``, ``\\text{}``, ``\\dfrac``,
   number spellings normalised) are ``"correct"``. In ``"exact"`` mode that is the whole check.
   It runs in-process: every step is linear in the (tail-bounded) input, so it needs no sandbox.
4. ``"math"`` mode then asks math-verify whether the answers are mathematically equal, in a
   sandbox worker process with a hard time limit (``sandbox.SandboxPool``): ``"timeout"`` when the
   limit is hit, ``"error"`` when the worker failed. Answers longer than
   ``equivalence.MAX_ANSWER_CHARS`` or nested deeper than ``equivalence.MAX_NESTING_DEPTH`` are
   ``"wrong"`` without parsing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from effreason.format import split_thinking
from effreason.grading.equivalence import exceeds_parse_limits
from effreason.grading.extract import answer_key, clean_answer, extract_from_text
from effreason.grading.sandbox import SandboxPool, WorkerError, WorkerTimeout

MODES = ("math", "exact")
REASONS = ("correct", "wrong", "no_answer", "truncated", "timeout", "error")


@dataclass(frozen=True)
class GradeResult:
    """Outcome of grading one completion.

    Attributes:
        correct: whether the answer matches the gold.
        extracted: the extracted answer (``None`` if there was none).
        reason: one of ``REASONS``: "correct", "wrong", "no_answer" (nothing extractable),
            "truncated" (thinking never closed), "timeout" (math check over the time limit),
            "error" (the math check failed).
    """

    correct: bool
    extracted: str | None
    reason: str


class Grader:
    """Grades completions against gold answers; a context manager (``close()`` stops workers).

    Args:
        mode: "math" (math-verify equivalence) or "exact" (normalised string equality).
        timeout_s: hard time limit of one math check (worker start-up is not counted).
        num_workers: sandbox worker processes; ``grade_batch`` runs that many checks at once.
        last_number_fallback: take the last number of the text when no answer pattern matches
            (for GSM8K-style outputs).
        memory_mb: address-space cap of each worker process (0: none).
    """

    def __init__(self, mode: str = "math", *, timeout_s: float = 5.0, num_workers: int = 1,
                 last_number_fallback: bool = False, memory_mb: int = 4096):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.mode = mode
        self.timeout_s = float(timeout_s)
        self.num_workers = num_workers
        self.last_number_fallback = last_number_fallback
        self.memory_mb = memory_mb
        self._pool: SandboxPool | None = None
        self._pool_lock = threading.Lock()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (they restart lazily if the grader is used again)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()

    def _sandbox(self) -> SandboxPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = SandboxPool(self.num_workers, memory_mb=self.memory_mb)
            return self._pool

    def grade(self, completion: str, gold: str) -> GradeResult:
        """Grade one completion against its gold answer (see the module docstring for the steps)."""
        answer = split_thinking(completion).answer
        if answer is None:
            return GradeResult(False, None, "truncated")
        extracted = extract_from_text(answer, last_number_fallback=self.last_number_fallback)
        if extracted is None:
            return GradeResult(False, None, "no_answer")
        gold = clean_answer(str(gold))
        if answer_key(extracted) == answer_key(gold):
            return GradeResult(True, extracted, "correct")
        if self.mode == "exact" or exceeds_parse_limits(extracted) or exceeds_parse_limits(gold):
            return GradeResult(False, extracted, "wrong")
        try:
            reply = self._sandbox().request({"pred": extracted, "gold": gold}, self.timeout_s)
        except WorkerTimeout:
            return GradeResult(False, extracted, "timeout")
        except WorkerError:
            return GradeResult(False, extracted, "error")
        if "equal" not in reply:
            return GradeResult(False, extracted, "error")
        return GradeResult(bool(reply["equal"]), extracted, "correct" if reply["equal"] else "wrong")

    def grade_batch(self, completions: Sequence[str], golds: Sequence[str]) -> list[GradeResult]:
        """Grade many completions; with several workers the math checks run in parallel."""
        if len(completions) != len(golds):
            raise ValueError(f"got {len(completions)} completions but {len(golds)} golds")
        if self.mode == "exact" or self.num_workers == 1 or len(completions) < 2:
            return [self.grade(c, g) for c, g in zip(completions, golds, strict=True)]
        with ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="grader") as pool:
            return list(pool.map(self.grade, completions, golds))


_DEFAULT_GRADERS: dict[tuple, Grader] = {}
_DEFAULT_GRADERS_LOCK = threading.Lock()


def grade(completion: str, gold: str, *, mode: str = "math", timeout_s: float = 5.0,
          last_number_fallback: bool = False) -> GradeResult:
    """Grade one completion with a shared, lazily created ``Grader`` per set of options."""
    key = (mode, float(timeout_s), bool(last_number_fallback))
    with _DEFAULT_GRADERS_LOCK:
        grader = _DEFAULT_GRADERS.get(key)
        if grader is None:
            grader = Grader(mode, timeout_s=timeout_s, last_number_fallback=last_number_fallback)
            _DEFAULT_GRADERS[key] = grader
    return grader.grade(completion, gold)
