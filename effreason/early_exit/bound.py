"""Does the conformal bound hold? Many random calibration / test splits of held-out problems.

For each split, the held-out problems are divided at random (by problem) into calibration and test
halves; the thresholds are calibrated on the calibration events and applied to the test traces as
generation would apply them (each trace exits at its first event whose prediction set is ``{1}``).
Per delta it reports, over the splits:

- ``wrong_exit_rate``: among test events where exiting is wrong (label 0), the share whose prediction
  set is ``{1}`` (what the guarantee bounds by delta, per event);
- ``premature_rate``: the share of test traces (with or without cues) whose *first* exit is at a wrong
  event (what a user sees per trace; not bounded by delta: a trace passes several wrong events);
- ``exit_rate`` and the tokens saved by the first exits (``tokens_if_exit`` of the labels).

Sampling slack: with ``m`` wrong test events, the rate's standard error is about
``sqrt(delta (1 - delta) / m)``; the report gives the mean over splits, its spread and that slack; ``holds`` is
``mean <= delta + slack``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from effreason.early_exit.conformal import calibrate, exit_mask


def bound_check(p: np.ndarray, labels: np.ndarray, problems: Sequence[str], traces: Sequence[int],
                trace_problems: dict[int, str], trace_tokens: dict[int, int], tokens_if_exit: np.ndarray,
                deltas: Sequence[float], *, splits: int = 50, seed: int = 0) -> list[dict]:
    """Per delta, the wrong-exit and premature-exit rates over ``splits`` random halvings of the problems.

    Args:
        p, labels: probe outputs and labels of the held-out events.
        problems, traces: each event's problem id and trace number.
        trace_problems: every held-out trace (those without a cue too: they never exit) -> its problem.
        trace_tokens: tokens of each held-out trace as generated (its cost without exit).
        tokens_if_exit: tokens of each event's trace if it exits there.
    """
    p, labels = np.asarray(p), np.asarray(labels).astype(int)
    problems, traces = np.asarray(problems), np.asarray(traces)
    unique = np.array(sorted(set(trace_problems.values())))
    rng = np.random.default_rng(seed)
    out = {d: {"wrong_exit": [], "premature": [], "exit": [], "token_ratio": [], "wrong_events": []} for d in deltas}
    for _ in range(splits):
        cal_problems = set(rng.choice(unique, size=len(unique) // 2, replace=False).tolist())
        cal = np.array([q in cal_problems for q in problems.tolist()])
        test = ~cal
        for t in calibrate(p[cal], labels[cal], deltas):
            ex = exit_mask(p[test], t)
            wrong = labels[test] == 0
            stats = out[t.delta]
            stats["wrong_events"].append(int(wrong.sum()))
            stats["wrong_exit"].append(float(ex[wrong].mean()) if wrong.any() else 0.0)
            first: dict[int, int] = {}
            for i in np.flatnonzero(test):  # events are in trace order, token order within a trace
                tr = int(traces[i])
                if tr not in first and exit_mask(p[i : i + 1], t)[0]:
                    first[tr] = i
            test_traces = sorted(t for t, q in trace_problems.items() if q not in cal_problems)
            stats["premature"].append(float(np.mean([tr in first and labels[first[tr]] == 0 for tr in test_traces])))
            stats["exit"].append(float(np.mean([tr in first for tr in test_traces])))
            used = sum(tokens_if_exit[first[tr]] if tr in first else trace_tokens[tr] for tr in test_traces)
            stats["token_ratio"].append(used / sum(trace_tokens[tr] for tr in test_traces))
    report = []
    for d in deltas:
        s = out[d]
        m = float(np.mean(s["wrong_events"]))
        slack = math.sqrt(d * (1 - d) / m) if m else math.inf
        report.append({"delta": d, "splits": splits, "wrong_exit_rate": float(np.mean(s["wrong_exit"])),
                       "wrong_exit_rate_p90": float(np.quantile(s["wrong_exit"], 0.9)),
                       "wrong_exit_rate_max": float(np.max(s["wrong_exit"])),
                       "slack_1se": slack, "holds": bool(np.mean(s["wrong_exit"]) <= d + slack),
                       "premature_rate": float(np.mean(s["premature"])), "exit_rate": float(np.mean(s["exit"])),
                       "token_ratio": float(np.mean(s["token_ratio"])), "wrong_test_events": m})
    return report
