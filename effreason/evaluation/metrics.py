"""Efficiency metrics as pure functions (METHODS.md section 8).

Everything here takes plain numbers or lists and returns numbers, so each formula is unit-tested
with hand-computed values and shared by ``effreason eval`` and ``effreason eval compare``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from effreason.stats import percentile

#: O1-Pruner's default AES weights (arXiv 2501.12570): length gain, accuracy gain, accuracy loss.
AES_WEIGHTS = (1.0, 3.0, 5.0)


def accuracy(correct: Sequence[bool]) -> float:
    """Share of correct items (0.0 for an empty list)."""
    return sum(bool(c) for c in correct) / len(correct) if correct else 0.0


def token_stats(num_tokens: Sequence[float], prefix: str = "tokens") -> dict[str, float]:
    """Mean, median, p90 and max of per-completion token counts, keyed ``{prefix}_mean`` etc."""
    if not num_tokens:
        nan = float("nan")
        return {f"{prefix}_mean": nan, f"{prefix}_median": nan, f"{prefix}_p90": nan, f"{prefix}_max": nan}
    return {
        f"{prefix}_mean": sum(num_tokens) / len(num_tokens),
        f"{prefix}_median": percentile(num_tokens, 50),
        f"{prefix}_p90": percentile(num_tokens, 90),
        f"{prefix}_max": float(max(num_tokens)),
    }


def eff(acc: float, tokens_mean: float) -> float:
    """EFF = accuracy / mean completion tokens (METHODS.md section 8); NaN when no tokens."""
    return acc / tokens_mean if tokens_mean > 0 else float("nan")


def accuracy_per_1k_tokens(acc: float, tokens_mean: float) -> float:
    """Accuracy bought per 1,000 completion tokens: ``1000 * EFF``."""
    return 1000.0 * eff(acc, tokens_mean)


def token_reduction(tokens_mean: float, base_tokens_mean: float) -> float:
    """``1 - T / T_base``: the share of the baseline's tokens saved (negative = longer)."""
    if base_tokens_mean <= 0:
        raise ValueError(f"baseline mean tokens must be positive, got {base_tokens_mean}")
    return 1.0 - tokens_mean / base_tokens_mean


def aes(acc: float, tokens_mean: float, base_acc: float, base_tokens_mean: float,
        weights: tuple[float, float, float] = AES_WEIGHTS) -> float:
    """Accuracy-Efficiency Score of O1-Pruner (arXiv 2501.12570).

    ``dL = (L_base - L) / L_base`` and ``dA = (A - A_base) / A_base``; with weights ``(a, b, c)``,
    ``AES = a dL + b |dA|`` when ``dA >= 0``, else ``a dL - c |dA|``: accuracy losses weigh more than gains.
    """
    a, b, c = weights
    if base_acc <= 0:
        raise ValueError(f"AES needs a baseline accuracy > 0 (it divides by it), got {base_acc}")
    d_len = token_reduction(tokens_mean, base_tokens_mean)
    d_acc = (acc - base_acc) / base_acc
    return a * d_len + b * abs(d_acc) if d_acc >= 0 else a * d_len - c * abs(d_acc)


def budget_auc(budget_accuracy: dict[int, float]) -> float:
    """Normalised area under the accuracy-vs-budget curve.

    Trapezoid rule on a linear budget axis, divided by the budget range, so the result is the mean
    accuracy over ``[min budget, max budget]`` and lies in [0, 1]. With one budget it is that accuracy.
    """
    if not budget_accuracy:
        raise ValueError("budget_auc needs at least one budget")
    points = sorted(budget_accuracy.items())
    if len(points) == 1:
        return float(points[0][1])
    area = sum((b1 - b0) * (a0 + a1) / 2 for (b0, a0), (b1, a1) in zip(points, points[1:], strict=False))
    return area / (points[-1][0] - points[0][0])


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The most frequent non-missing answer; ties go to the one seen first. ``None`` if all are missing."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def majority_accuracy(groups: Sequence[Sequence[tuple[Hashable | None, bool]]]) -> float:
    """Majority-vote accuracy over problems.

    Args:
        groups: per problem, the ``(extracted answer, correct)`` pair of each of its samples. Answers are
            grouped by their extracted string, so the winner's correctness is that of its samples.
    """
    hits = []
    for samples in groups:
        winner = majority_vote([answer for answer, _ in samples])
        hits.append(winner is not None and any(ok for answer, ok in samples if answer == winner))
    return accuracy(hits)


@dataclass(frozen=True)
class Point:
    """One run on the accuracy-vs-tokens plane."""

    label: str
    tokens: float
    accuracy: float


def pareto_frontier(points: Sequence[Point]) -> list[Point]:
    """Points no other point dominates (no more tokens and no less accuracy, one strictly), by tokens."""
    frontier = []
    for p in points:
        dominated = any(
            q.tokens <= p.tokens and q.accuracy >= p.accuracy and (q.tokens < p.tokens or q.accuracy > p.accuracy)
            for q in points
        )
        if not dominated:
            frontier.append(p)
    return sorted(frontier, key=lambda p: (p.tokens, -p.accuracy))
