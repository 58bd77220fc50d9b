"""Efficiency formulas against hand-computed values (METHODS.md section 8)."""

import math

import pytest

from effreason.evaluation import metrics
from effreason.evaluation.metrics import Point
from effreason.stats import percentile


def test_accuracy_and_percentiles():
    assert metrics.accuracy([True, False, True, True]) == 0.75
    assert metrics.accuracy([]) == 0.0
    # numpy's linear interpolation: position (4 - 1) * 0.9 = 2.7 between 3 and 4
    assert percentile([4, 1, 3, 2], 90) == pytest.approx(3.7)
    assert percentile([5], 90) == 5
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_token_stats():
    stats = metrics.token_stats([10, 20, 30, 100])
    assert stats == pytest.approx({"tokens_mean": 40.0, "tokens_median": 25.0, "tokens_p90": 79.0, "tokens_max": 100.0})
    assert all(math.isnan(v) for v in metrics.token_stats([], prefix="t").values())


def test_eff_and_reduction():
    assert metrics.eff(0.5, 200) == pytest.approx(0.0025)
    assert metrics.accuracy_per_1k_tokens(0.5, 200) == pytest.approx(2.5)
    assert math.isnan(metrics.eff(0.5, 0))
    assert metrics.token_reduction(60, 100) == pytest.approx(0.4)
    assert metrics.token_reduction(150, 100) == pytest.approx(-0.5)


def test_aes_o1_pruner():
    # dL = (100 - 60) / 100 = 0.4
    assert metrics.aes(0.8, 60, 0.8, 100) == pytest.approx(0.4)  # dA = 0
    assert metrics.aes(0.88, 60, 0.8, 100) == pytest.approx(0.4 + 3 * 0.1)  # dA = +0.1, weight b = 3
    assert metrics.aes(0.72, 60, 0.8, 100) == pytest.approx(0.4 - 5 * 0.1)  # dA = -0.1, weight c = 5
    assert metrics.aes(0.88, 60, 0.8, 100, weights=(2, 1, 1)) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="baseline accuracy"):
        metrics.aes(0.5, 10, 0.0, 100)


def test_budget_auc():
    # trapezoids: 64 * (0.2 + 0.6) / 2 + 128 * (0.6 + 1.0) / 2 = 25.6 + 102.4 = 128, over a range of 192
    assert metrics.budget_auc({256: 1.0, 64: 0.2, 128: 0.6}) == pytest.approx(128 / 192)
    assert metrics.budget_auc({32: 0.3}) == 0.3
    with pytest.raises(ValueError):
        metrics.budget_auc({})


def test_majority_vote_and_accuracy():
    assert metrics.majority_vote(["3", "4", "4", None, "3"]) == "3"  # 2-2 tie: first seen wins
    assert metrics.majority_vote(["3", "4", "4"]) == "4"
    assert metrics.majority_vote([None, None]) is None
    groups = [
        [("3", True), ("4", False), ("3", True)],  # majority 3, correct
        [("5", False), ("5", False), ("6", True)],  # majority 5, wrong although one sample is right
        [(None, False)],  # nothing extracted
    ]
    assert metrics.majority_accuracy(groups) == pytest.approx(1 / 3)


def test_pareto_frontier():
    pts = [Point("A", 100, 0.5), Point("B", 200, 0.7), Point("C", 150, 0.4), Point("D", 200, 0.6),
           Point("E", 300, 0.7)]
    assert [p.label for p in metrics.pareto_frontier(pts)] == ["A", "B"]
    # equal points do not dominate each other
    assert len(metrics.pareto_frontier([Point("x", 1, 0.5), Point("y", 1, 0.5)])) == 2
