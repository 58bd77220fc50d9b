"""Length-aware rewards for efficient reasoning. Every length is in TOKENS: ``len(completion_ids[i])``.

Which reward replaces correctness and which is added to it:

- replace ``correctness`` (they contain the accuracy term): ``LGRPO``, ``TLDRLength``,
  ``CosineLength``, ``L1Exact``, ``L1Max``;
- add to ``correctness`` (shaping terms only): ``KimiLength``, ``DAPOOverlong``.

Rewards that need correctness hold a ``Correctness`` and call the shared grader through it.
``LGRPO`` and ``KimiLength`` are group-relative: they read a prompt's whole group of
``num_generations`` consecutive completions (see ``effreason.rewards.groups``).

GRPO caveat (METHODS section 0): with ``scale_rewards="group"`` the advantage of an all-correct
group is about ``-zscore(length)`` whatever the length weight, since the division by the group std
cancels the weight. Use ``scale_rewards="batch"`` or ``"none"`` to keep a length weight meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from effreason.rewards.batch import batch_column, completion_lengths
from effreason.rewards.correctness import Correctness
from effreason.rewards.groups import group_blocks, log_group_stats


def _positive_int(value: Any, what: str, reward_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{reward_name}: {what} must be a positive integer, got {value!r}")
    return value


def _non_negative(value: Any, what: str, reward_name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{reward_name}: {what} must be a number, got {value!r}") from None
    if not value >= 0:  # also refuses nan
        raise ValueError(f"{reward_name}: {what} must be >= 0, got {value!r}")
    return value


def _graded_groups(reward: Any, prompts, completions, completion_ids, kwargs) -> tuple[list, list[int], list]:
    """What every group-relative reward needs: the prompt groups, token lengths and correctness."""
    blocks = group_blocks(prompts, reward.num_generations, reward.__name__)
    lengths = completion_lengths(completion_ids, len(completions), reward.__name__)
    correct = reward.correctness.grade_from_kwargs(completions, kwargs, reward.__name__)
    return blocks, lengths, correct


class LGRPO:
    """L-GRPO length reward (ConciseR, "Walk Before You Run!", arXiv 2505.21178): replaces correctness.

    The length term acts only on groups where all G rollouts are correct::

        all-correct group:  r_i = 1 + alpha * (1 - min(L_i, L_max) / L_max)
        otherwise:          r_i = 1[correct_i]

    The paper states the gating (length reward only when the whole group is correct); the exact
    formula is not specified in any copy we could read, so this one is **the project's choice**
    (METHODS section 1), with ``L_max`` the rollout's maximum completion length. Also logs the group
    statistics (``reward/frac_all_correct_groups`` ...) through TRL's ``log_metric``.

    Args:
        num_generations: group size G; must equal the trainer's.
        max_completion_tokens: ``L_max``, the rollout's ``max_completion_length``.
        alpha: weight of the length bonus.
        mode, timeout_s, answer_column: passed to ``Correctness``.
    """

    def __init__(self, *, num_generations: int, max_completion_tokens: int, alpha: float, mode: str = "math",
                 timeout_s: float = 5.0, answer_column: str = "answer") -> None:
        self.__name__ = "lgrpo"
        self.num_generations = _positive_int(num_generations, "num_generations", self.__name__)
        self.max_completion_tokens = _positive_int(max_completion_tokens, "max_completion_tokens",
                                                   self.__name__)
        self.alpha = _non_negative(alpha, "alpha (the weight of the length bonus)", self.__name__)
        self.correctness = Correctness(mode=mode, timeout_s=timeout_s, answer_column=answer_column)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        blocks, lengths, correct = _graded_groups(self, prompts, completions, completion_ids, kwargs)
        rewards: list[float | None] = [None] * len(completions)
        for block in blocks:
            if any(correct[i] is None for i in block):
                continue  # no gold answer for this prompt: abstain
            all_correct = all(correct[i] for i in block)
            for i in block:
                if all_correct:
                    used = min(lengths[i], self.max_completion_tokens) / self.max_completion_tokens
                    rewards[i] = 1.0 + self.alpha * (1.0 - used)
                else:
                    rewards[i] = float(bool(correct[i]))
        log_group_stats(kwargs, correct, lengths, self.num_generations)
        return rewards


class KimiLength:
    """Kimi k1.5 length reward (arXiv 2501.12599), over ONE prompt's group: add to correctness.

    With ``L_min``, ``L_max`` the shortest and longest completion of the prompt's group::

        lam_i = 0.5 - (L_i - L_min) / (L_max - L_min)
        correct: r_i = lam_i        wrong: r_i = min(0, lam_i)

    All lengths equal in a group: ``r_i = 0``. Unlike open-r1's version, lengths are tokens and
    ``L_min``/``L_max`` come from the prompt's own group, not the whole local batch.

    Args:
        num_generations: group size G; must equal the trainer's.
        mode, timeout_s, answer_column: passed to ``Correctness``.
    """

    def __init__(self, *, num_generations: int, mode: str = "math", timeout_s: float = 5.0,
                 answer_column: str = "answer") -> None:
        self.__name__ = "kimi"
        self.num_generations = _positive_int(num_generations, "num_generations", self.__name__)
        self.correctness = Correctness(mode=mode, timeout_s=timeout_s, answer_column=answer_column)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        blocks, lengths, correct = _graded_groups(self, prompts, completions, completion_ids, kwargs)
        rewards: list[float | None] = [None] * len(completions)
        for block in blocks:
            if any(correct[i] is None for i in block):
                continue
            shortest = min(lengths[i] for i in block)
            longest = max(lengths[i] for i in block)
            for i in block:
                if longest == shortest:
                    rewards[i] = 0.0
                    continue
                lam = 0.5 - (lengths[i] - shortest) / (longest - shortest)
                rewards[i] = lam if correct[i] else min(0.0, lam)
        log_group_stats(kwargs, correct, lengths, self.num_generations)
        return rewards


def _thinking_length(ids: Sequence[int], length: int, think_end_id: int) -> int:
    """Tokens up to and including the last ``</think>`` among the first ``length`` ids (all of them without one)."""
    ids = list(ids[:length])
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == think_end_id:
            return i + 1
    return length


class TLDRLength:
    """Multi-level length-penalised reward after TLDR (arXiv 2505.07961): replaces correctness.

    Each prompt requests a length level ``l`` (a dataset column, default ``length_level``), and each
    level has a token budget ``B_l`` and a weight ``lambda_l``::

        r = 1[correct] - lambda_l * (max(0, L - B_l) / B_l + max(0, F_l - L) / F_l)

    with an optional floor ``F_l`` per level (no floor: the second term is 0). The paper's penalty
    ``P(L)``, per-level weights and prompt wording are not specified in what we could read: this
    overflow-over-budget form, and the floor, are **the project's choices** (METHODS section 2). The
    floor keeps the levels apart: under sampling, the accuracy reward alone favours shorter traces
    (fewer sampled tokens, fewer slips), so without one every level drifts short (seen in the lab).

    Args:
        budgets: level -> token budget ``B_l``, e.g. ``{"short": 128, "medium": 256, "long": 512}``.
        lambdas: one weight for all levels, or level -> ``lambda_l``.
        floors: level -> minimum tokens ``F_l`` for the levels that have one (must be below ``B_l``).
        level_column: dataset column holding each prompt's level.
        tokens: what ``L`` counts: ``"completion"`` (every generated token, TLDR) or ``"thinking"`` (the tokens up
            to and including the last ``</think>``, all of them when it never closes: the reasoning adapter's
            length buckets, ``recipes/lora_adapter.py``), which needs ``think_end_id``.
        think_end_id: the id of ``</think>`` (a single token) for ``tokens="thinking"``.
        mode, timeout_s, answer_column: passed to ``Correctness``.
    """

    def __init__(self, *, budgets: Mapping[str, int], lambdas: float | Mapping[str, float] = 1.0,
                 floors: Mapping[str, int] | None = None, level_column: str = "length_level",
                 tokens: str = "completion", think_end_id: int | None = None,
                 mode: str = "math", timeout_s: float = 5.0, answer_column: str = "answer") -> None:
        self.__name__ = "tldr"
        if tokens not in ("completion", "thinking"):
            raise ValueError(f"tldr: tokens must be 'completion' or 'thinking', got {tokens!r}")
        if tokens == "thinking" and (isinstance(think_end_id, bool) or not isinstance(think_end_id, int)):
            raise ValueError("tldr: tokens: thinking counts up to </think>, so it needs think_end_id (its token id)")
        self.tokens, self.think_end_id = tokens, think_end_id
        if not budgets:
            raise ValueError("tldr: budgets must map at least one level to a token budget")
        self.budgets = {
            str(k): _positive_int(v, f"budget of level {k!r}", self.__name__) for k, v in budgets.items()
        }
        if isinstance(lambdas, Mapping):
            missing = sorted(set(self.budgets) - {str(k) for k in lambdas})
            if missing:
                raise ValueError(
                    f"tldr: lambdas has no weight for levels {missing}; levels: {sorted(self.budgets)}"
                )
            self.lambdas = {str(k): _non_negative(v, f"lambda of level {k!r}", self.__name__)
                            for k, v in lambdas.items()}
        else:
            self.lambdas = dict.fromkeys(self.budgets, _non_negative(lambdas, "lambdas", self.__name__))
        self.floors = {}
        for level, floor in (floors or {}).items():
            if str(level) not in self.budgets:
                raise ValueError(f"tldr: floor for level {level!r}, which has no budget; levels: {sorted(self.budgets)}")
            self.floors[str(level)] = _positive_int(floor, f"floor of level {level!r}", self.__name__)
            if self.floors[str(level)] >= self.budgets[str(level)]:
                raise ValueError(f"tldr: floor {floor} of level {level!r} must be below its budget "
                                 f"{self.budgets[str(level)]}")
        self.level_column = level_column
        self.correctness = Correctness(mode=mode, timeout_s=timeout_s, answer_column=answer_column)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        lengths = completion_lengths(completion_ids, n, self.__name__)
        if self.tokens == "thinking":
            lengths = [_thinking_length(ids, length, self.think_end_id) for ids, length in
                       zip(completion_ids, lengths, strict=True)]
        levels = batch_column(kwargs, self.level_column, n, self.__name__, "requested length level")
        correct = self.correctness.grade_from_kwargs(completions, kwargs, self.__name__)
        rewards: list[float | None] = []
        for length, level, ok in zip(lengths, levels, correct, strict=True):
            if str(level) not in self.budgets:
                raise ValueError(
                    f"tldr: length level {level!r} (column {self.level_column!r}) has no budget; "
                    f"levels with a budget: {sorted(self.budgets)}"
                )
            budget, lam = self.budgets[str(level)], self.lambdas[str(level)]
            penalty = max(0, length - budget) / budget
            floor = self.floors.get(str(level))
            if floor is not None:
                penalty += max(0, floor - length) / floor
            rewards.append(None if ok is None else float(ok) - lam * penalty)
        self._log_levels(kwargs, levels, lengths, correct)
        return rewards

    def _log_levels(self, kwargs: dict[str, Any], levels: Sequence[Any], lengths: Sequence[int],
                    correct: Sequence[bool | None]) -> None:
        """Per level: ``tldr/<level>/tokens_mean`` and ``tldr/<level>/accuracy`` through TRL's ``log_metric``."""
        log_metric = kwargs.get("log_metric")
        if not callable(log_metric):
            return
        for level in self.budgets:
            rows = [i for i, lvl in enumerate(levels) if str(lvl) == level and correct[i] is not None]
            if rows:
                log_metric(f"tldr/{level}/tokens_mean", sum(lengths[i] for i in rows) / len(rows))
                log_metric(f"tldr/{level}/accuracy", sum(bool(correct[i]) for i in rows) / len(rows))


class CosineLength:
    """Cosine length-scaled reward (Yeo et al., arXiv 2502.03373): replaces correctness.

    With ``L`` clamped to ``L_max`` and ``c = 0.5 * (1 + cos(pi * L / L_max))`` (1 at ``L = 0``,
    0 at ``L = L_max``), and each range given as ``(v_min, v_max)``::

        correct: r = v_min + (v_max - v_min) * c    (v_max for the shortest, v_min at L_max)
        wrong:   r = v_max + (v_min - v_max) * c    (v_min for the shortest, v_max at L_max)

    So a short correct answer earns the most, and a wrong answer is penalised *less* the longer the
    model thought (the paper's choice, to keep it reasoning when unsure). Defaults are the paper's
    released settings (eddycmu/demystify-long-cot): correct (1, 2), wrong (-10, 0), and
    ``exceed_reward=-10`` for a completion that ran out of room. Which completions count as
    exceeding is our reading: ``L >= L_max`` (it reached the generation limit); ``None`` turns it off.

    Args:
        max_completion_tokens: ``L_max``, the rollout's ``max_completion_length``.
        correct_range: ``(v_min, v_max)`` for correct completions.
        wrong_range: ``(v_min, v_max)`` for wrong completions.
        exceed_reward: reward for ``L >= L_max``, or ``None``.
        mode, timeout_s, answer_column: passed to ``Correctness``.
    """

    def __init__(self, *, max_completion_tokens: int, correct_range: Sequence[float] = (1.0, 2.0),
                 wrong_range: Sequence[float] = (-10.0, 0.0), exceed_reward: float | None = -10.0,
                 mode: str = "math", timeout_s: float = 5.0, answer_column: str = "answer") -> None:
        self.__name__ = "cosine"
        self.max_completion_tokens = _positive_int(max_completion_tokens, "max_completion_tokens",
                                                   self.__name__)
        self.correct_range = self._range(correct_range, "correct_range")
        self.wrong_range = self._range(wrong_range, "wrong_range")
        self.exceed_reward = None if exceed_reward is None else float(exceed_reward)
        self.correctness = Correctness(mode=mode, timeout_s=timeout_s, answer_column=answer_column)

    def _range(self, values: Sequence[float], what: str) -> tuple[float, float]:
        if len(values) != 2 or float(values[0]) > float(values[1]):
            raise ValueError(f"cosine: {what} must be (v_min, v_max) with v_min <= v_max, got {values!r}")
        return float(values[0]), float(values[1])

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        lengths = completion_lengths(completion_ids, len(completions), self.__name__)
        correct = self.correctness.grade_from_kwargs(completions, kwargs, self.__name__)
        rewards: list[float | None] = []
        for length, ok in zip(lengths, correct, strict=True):
            if ok is None:
                rewards.append(None)
            elif self.exceed_reward is not None and length >= self.max_completion_tokens:
                rewards.append(self.exceed_reward)
            else:
                c = 0.5 * (1.0 + math.cos(math.pi * min(length, self.max_completion_tokens)
                                          / self.max_completion_tokens))
                lo, hi = self.correct_range if ok else self.wrong_range
                rewards.append(lo + (hi - lo) * c if ok else hi + (lo - hi) * c)
        return rewards


class DAPOOverlong:
    """DAPO soft overlong punishment (arXiv 2503.14476): add to correctness.

    With ``L_max`` the generation limit and ``L_cache`` the punishment interval::

        L <= L_max - L_cache:           r = 0
        L_max - L_cache < L <= L_max:   r = (L_max - L_cache - L) / L_cache   (0 down to -1)
        L > L_max:                      r = -1

    Args:
        max_completion_tokens: ``L_max``.
        cache_tokens: ``L_cache`` (DAPO: 4096 of 20480), in ``(0, L_max]``.
    """

    def __init__(self, *, max_completion_tokens: int, cache_tokens: int) -> None:
        self.__name__ = "dapo_overlong"
        self.max_completion_tokens = _positive_int(max_completion_tokens, "max_completion_tokens",
                                                   self.__name__)
        self.cache_tokens = _positive_int(cache_tokens, "cache_tokens", self.__name__)
        if self.cache_tokens > self.max_completion_tokens:
            raise ValueError(
                f"dapo_overlong: cache_tokens ({cache_tokens}) must not exceed max_completion_tokens "
                f"({max_completion_tokens})"
            )

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        start = self.max_completion_tokens - self.cache_tokens
        rewards: list[float | None] = []
        for length in completion_lengths(completion_ids, len(completions), self.__name__):
            if length <= start:
                rewards.append(0.0)
            elif length <= self.max_completion_tokens:
                rewards.append((start - length) / self.cache_tokens)
            else:
                rewards.append(-1.0)
        return rewards


def _targets(kwargs: dict[str, Any], column: str, n: int, reward_name: str) -> list[int]:
    values = batch_column(kwargs, column, n, reward_name, "target length in tokens")
    return [_positive_int(v, f"target in column {column!r}", reward_name) for v in values]


class L1Exact:
    """L1 / LCPO-Exact (Aggarwal & Welleck, arXiv 2503.04697): replaces correctness.

    The prompt asks "Think for N tokens."; ``N`` comes from a dataset column (default
    ``target_tokens``)::

        r = 1[correct] - alpha * |N - L|      (paper: alpha = 3e-4)

    Args:
        alpha: penalty per token of deviation from the target.
        target_column: dataset column with ``N``.
        mode, timeout_s, answer_column: passed to ``Correctness``.
    """

    def __init__(self, *, alpha: float = 3e-4, target_column: str = "target_tokens", mode: str = "math",
                 timeout_s: float = 5.0, answer_column: str = "answer") -> None:
        self.__name__ = "l1_exact"
        self.alpha = _non_negative(alpha, "alpha (the penalty per token)", self.__name__)
        self.target_column = target_column
        self.correctness = Correctness(mode=mode, timeout_s=timeout_s, answer_column=answer_column)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        lengths = completion_lengths(completion_ids, n, self.__name__)
        targets = _targets(kwargs, self.target_column, n, self.__name__)
        correct = self.correctness.grade_from_kwargs(completions, kwargs, self.__name__)
        return [
            None if ok is None else float(ok) - self.alpha * abs(target - length)
            for length, target, ok in zip(lengths, targets, correct, strict=True)
        ]


class L1Max:
    """L1 / LCPO-Max (Aggarwal & Welleck, arXiv 2503.04697): replaces correctness.

    ``N`` is a budget (upper limit) from a dataset column (default ``target_tokens``)::

        r = 1[correct] * clip(alpha * (N - L) + delta, 0, 1)

    Args:
        alpha: slope of the soft budget (no default: choose it for your lengths).
        delta: offset; 0.5 as in the paper, so a correct answer exactly at the budget gets 0.5.
        target_column: dataset column with ``N``.
        mode, timeout_s, answer_column: passed to ``Correctness``.
    """

    def __init__(self, *, alpha: float, delta: float = 0.5, target_column: str = "target_tokens",
                 mode: str = "math", timeout_s: float = 5.0, answer_column: str = "answer") -> None:
        self.__name__ = "l1_max"
        self.alpha = _non_negative(alpha, "alpha (the slope of the soft budget)", self.__name__)
        self.delta = float(delta)
        self.target_column = target_column
        self.correctness = Correctness(mode=mode, timeout_s=timeout_s, answer_column=answer_column)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        lengths = completion_lengths(completion_ids, n, self.__name__)
        targets = _targets(kwargs, self.target_column, n, self.__name__)
        correct = self.correctness.grade_from_kwargs(completions, kwargs, self.__name__)
        rewards: list[float | None] = []
        for length, target, ok in zip(lengths, targets, correct, strict=True):
            soft_budget = min(1.0, max(0.0, self.alpha * (target - length) + self.delta))
            rewards.append(None if ok is None else float(ok) * soft_budget)
        return rewards
