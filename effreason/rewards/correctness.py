"""The correctness reward: the shared grader, called on each completion against the gold answer.

Training reward and evaluation accuracy use the same ``effreason.grading.Grader``, so they cannot
drift apart. Length rewards that need correctness hold a ``Correctness`` and call ``grade``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from effreason.rewards.batch import batch_column, completion_lengths
from effreason.rewards.format import completion_texts
from effreason.rewards.groups import group_blocks, log_group_stats

logger = logging.getLogger(__name__)

GRADING_MODES = ("math", "exact")


class Correctness:
    """1.0 if the completion's final answer matches the gold answer, else 0.0 (``r = 1[correct]``).

    The verifiable reward of RL for reasoning (DeepSeek-R1, arXiv 2501.12948). Grading is done by
    ``effreason.grading.Grader`` (``mode="math"``: symbolic equivalence with math-verify;
    ``mode="exact"``: normalised string match, used by the lab). A truncated completion (thinking
    never closed) has no answer and scores 0. A row whose gold answer is ``None`` abstains
    (``None``: TRL then ignores this reward for that row).

    Args:
        mode: grading mode, ``"math"`` or ``"exact"``.
        timeout_s: time limit for grading one completion.
        num_workers: grading processes (math-verify can hang on adversarial output).
        last_number_fallback: let the grader fall back to the last number when there is no ``\\boxed{}``.
        answer_column: dataset column that holds the gold answers.
        num_generations: group size G; when given (recipes fill it in), the reward also logs the group
            statistics (``reward/frac_all_correct_groups``, ``completions/tokens_p90``, ...) through
            TRL's ``log_metric``, like the length rewards do.
    """

    def __init__(self, mode: str = "math", timeout_s: float = 5.0, num_workers: int = 1,
                 last_number_fallback: bool = False, answer_column: str = "answer",
                 num_generations: int | None = None) -> None:
        if mode not in GRADING_MODES:
            raise ValueError(f"Correctness: mode={mode!r} is not one of {list(GRADING_MODES)}")
        if timeout_s <= 0:
            raise ValueError(f"Correctness: timeout_s must be > 0, got {timeout_s}")
        self.__name__ = "correctness"
        self.mode = mode
        self.timeout_s = timeout_s
        self.num_workers = num_workers
        self.last_number_fallback = last_number_fallback
        self.answer_column = answer_column
        if num_generations is not None and (isinstance(num_generations, bool) or int(num_generations) < 1):
            raise ValueError(f"Correctness: num_generations must be a positive int, got {num_generations!r}")
        self.num_generations = None if num_generations is None else int(num_generations)
        self._grader: Any = None  # built on first use, never pickled (it may own worker processes)
        self._last: tuple[tuple, list[bool | None]] | None = None  # one-batch memo, see ``grade``

    def settings(self) -> tuple:
        """The settings that decide a grade (not ``num_workers``, which only decides speed)."""
        return (self.mode, self.timeout_s, self.last_number_fallback, self.answer_column)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_grader"] = None
        state["_last"] = None
        return state

    def _get_grader(self) -> Any:
        if self._grader is None:
            from effreason.grading import Grader  # lazy: keeps import of the rewards package light

            logger.debug("building the %s grader (timeout %.1fs, %d workers)", self.mode, self.timeout_s,
                         self.num_workers)
            self._grader = Grader(self.mode, timeout_s=self.timeout_s, num_workers=self.num_workers,
                                  last_number_fallback=self.last_number_fallback)
        return self._grader

    def close(self) -> None:
        """Stop the grader's worker processes, if any (a later call starts them again)."""
        if self._grader is not None:
            self._grader.close()

    def grade(self, completions: Sequence[Any], golds: Sequence[Any]) -> list[bool | None]:
        """Whether each completion is correct; ``None`` where the gold answer is ``None``.

        TRL calls every reward of a step with the same batch, and several rewards of one recipe
        share one ``Correctness`` (see ``build_rewards``), so the last batch's grades are memoised:
        the batch is graded once per step, not once per reward.
        """
        texts = completion_texts(completions)
        key = (tuple(texts), tuple(None if g is None else str(g) for g in golds))
        if self._last is not None and self._last[0] == key:
            return list(self._last[1])
        rows = [i for i, g in enumerate(golds) if g is not None]
        results = self._get_grader().grade_batch([texts[i] for i in rows], [str(golds[i]) for i in rows])
        correct: list[bool | None] = [None] * len(texts)
        for i, result in zip(rows, results, strict=True):
            correct[i] = bool(result.correct)
        self._last = (key, correct)
        return list(correct)

    def grade_from_kwargs(self, completions: Sequence[Any], kwargs: dict[str, Any],
                          reward_name: str) -> list[bool | None]:
        """``grade`` with the gold answers taken from TRL's keyword arguments."""
        golds = batch_column(kwargs, self.answer_column, len(completions), reward_name, "gold answers")
        return self.grade(completions, golds)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        correct = self.grade_from_kwargs(completions, kwargs, self.__name__)
        if self.num_generations is not None:
            blocks = group_blocks(prompts, self.num_generations, self.__name__)
            lengths = completion_lengths(completion_ids, len(completions), self.__name__)
            if blocks:
                log_group_stats(kwargs, correct, lengths, self.num_generations)
        return [None if c is None else float(c) for c in correct]

    def __repr__(self) -> str:
        return f"Correctness(mode={self.mode!r}, timeout_s={self.timeout_s})"
