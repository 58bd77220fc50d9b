"""Class-conditional split conformal calibration of an exit probe (LYNX, arXiv 2512.05325).

The probe gives ``p = P(exiting here is right)`` at a cue event. With calibration events disjoint
from the probe's training data, each class ``c`` gets a threshold on its nonconformity score
``s_c = 1 - p_c`` (``p_1 = p``, ``p_0 = 1 - p``)::

    q_c = the k-th smallest s_c among the n_c calibration events of class c,  k = ceil((n_c + 1)(1 - delta))

and ``q_c = inf`` when ``k > n_c`` (too few events of that class for this delta: the class is always
in the prediction set, so the probe never exits). The reference code clips ``k`` to ``n_c`` instead,
which gives a finite threshold and voids the guarantee. The prediction set is
``S(x) = {c : s_c(x) <= q_c}``; the generation exits at the first cue where ``S(x) == {1}``, i.e.
``1 - p <= q_1`` and ``p > q_0``.

Guarantee: for a new event exchangeable with the calibration events of class 0 (exiting there is
wrong), ``P(0 in S) >= 1 - delta``, so the probe exits at such an event with probability at most
``delta``. It is a bound *per event*, not per trace: a trace passes several wrong-exit events before
its first right one, and its premature-exit rate can exceed ``delta`` (measured and reported by
``effreason.early_exit.bound``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: ``(n + 1)(1 - delta)`` is computed in floats; a product a hair above an integer must not round up.
_EPS = 1e-9


def conformal_rank(n: int, delta: float) -> int:
    """``ceil((n + 1)(1 - delta))``: the rank of the class threshold among ``n`` scores (may exceed ``n``)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return max(1, math.ceil((n + 1) * (1 - delta) - _EPS))


def class_threshold(scores: np.ndarray, delta: float) -> float:
    """The split-conformal threshold of one class's scores: the rank-th smallest, ``inf`` past ``n``."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    k = conformal_rank(len(scores), delta)
    return math.inf if k > len(scores) else float(scores[k - 1])


@dataclass(frozen=True)
class Thresholds:
    """The two class thresholds for one delta, and the calibration counts behind them."""

    delta: float
    q0: float
    q1: float
    n0: int
    n1: int

    def to_json(self) -> dict:
        """JSON-ready: an infinite threshold is written ``null`` (never excludes its class)."""
        finite = lambda q: None if math.isinf(q) else q  # noqa: E731
        return {"delta": self.delta, "q0": finite(self.q0), "q1": finite(self.q1), "n0": self.n0, "n1": self.n1}

    @classmethod
    def from_json(cls, obj: dict) -> Thresholds:
        inf = lambda q: math.inf if q is None else float(q)  # noqa: E731
        return cls(float(obj["delta"]), inf(obj["q0"]), inf(obj["q1"]), int(obj["n0"]), int(obj["n1"]))


def calibrate(p: np.ndarray, labels: np.ndarray, deltas: Sequence[float]) -> list[Thresholds]:
    """Class thresholds for each delta from calibration events' probabilities ``p`` and labels (1 = exit right)."""
    p, labels = np.asarray(p, dtype=np.float64), np.asarray(labels).astype(bool)
    if p.shape != labels.shape:
        raise ValueError(f"got {p.shape} probabilities for {labels.shape} labels")
    s0, s1 = p[~labels], 1.0 - p[labels]  # s_0 = 1 - p_0 = p; s_1 = 1 - p
    return [Thresholds(float(d), class_threshold(s0, d), class_threshold(s1, d), len(s0), len(s1))
            for d in deltas]


def exit_mask(p: np.ndarray, t: Thresholds) -> np.ndarray:
    """Whether each event's prediction set is ``{1}`` (exit): ``1 - p <= q1`` and ``p > q0``."""
    p = np.asarray(p, dtype=np.float64)
    return (1.0 - p <= t.q1) & (p > t.q0)


def should_exit(p: float, t: Thresholds) -> bool:
    """``exit_mask`` for one event."""
    return bool(1.0 - p <= t.q1 and p > t.q0)
