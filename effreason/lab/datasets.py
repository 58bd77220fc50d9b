"""Lab splits as ``datasets.Dataset`` objects with the benchmark columns.

Columns (same as every benchmark loader): ``id``, ``problem``, ``prompt`` (chat messages),
``answer`` (gold, as a string), ``solution`` (the oracle-minimal completion).

Splits are deterministic functions of fixed seeds; test problems never appear in train. ``dev``
(default difficulty, disjoint from every other split) is the bootstrap's held-out gate set, so the
gate never looks at the test split that gets reported.

``mixed`` (1 to 8 steps, the ``lab_mixed`` benchmark's test split), ``mixed_cal`` (its calibration problems:
the router's threshold, the direct-answer base's gate) and ``mixed_train`` (training problems) are drawn
after the others, in that order, each disjoint from every split before it. There are only 319 distinct
one-step problems, so the later splits hold fewer of them than a uniform draw would (``mixed_train``: those
the others left).
"""

from __future__ import annotations

import functools
import random
from typing import TYPE_CHECKING

from effreason.format import chat_prompt
from effreason.lab.task import (
    DEFAULT_DIFFICULTY,
    HARD_DIFFICULTY,
    MIXED_DIFFICULTY,
    TRAIN_DIFFICULTY,
    Difficulty,
    Problem,
    sample_problem,
)
from effreason.lab.traces import oracle_trace

if TYPE_CHECKING:
    from datasets import Dataset

#: split -> (number of problems, difficulty, seed)
SPLITS: dict[str, tuple[int, Difficulty, int]] = {
    "train": (20_000, TRAIN_DIFFICULTY, 1),
    "test": (2_000, DEFAULT_DIFFICULTY, 2),
    "hard": (1_000, HARD_DIFFICULTY, 3),
    "dev": (500, DEFAULT_DIFFICULTY, 4),
    "mixed": (1_000, MIXED_DIFFICULTY, 5),
    "mixed_cal": (2_000, MIXED_DIFFICULTY, 7),
    "mixed_train": (20_000, MIXED_DIFFICULTY, 6),
}
#: Splits drawn after the first four, each disjoint from all of them and from the ones before it.
_LATER = ("mixed", "mixed_cal", "mixed_train")
#: Splits a lab model is evaluated or calibrated on: never trained on.
HELD_OUT = ("test", "hard", "dev", "mixed", "mixed_cal")


def lab_problems(split: str) -> list[Problem]:
    """The problems of a split (a fresh list; see ``_split_problems``)."""
    return list(_split_problems(split))


@functools.cache
def _split_problems(split: str) -> tuple[Problem, ...]:
    """The problems of a split, distinct within the split; train is disjoint from test and hard, dev from
    all three (train's problems do not depend on dev: it is drawn after them)."""
    if split not in SPLITS:
        raise ValueError(f"unknown lab split {split!r}; expected one of {sorted(SPLITS)}")
    n, difficulty, seed = SPLITS[split]
    exclude: set[Problem] = set()
    if split == "train":
        exclude = set(lab_problems("test")) | set(lab_problems("hard"))
    elif split == "dev":
        exclude = set(lab_problems("train")) | set(lab_problems("test")) | set(lab_problems("hard"))
    elif split in _LATER:
        earlier = ["train", "test", "hard", "dev", *_LATER[: _LATER.index(split)]]
        exclude = set().union(*(lab_problems(s) for s in earlier))
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        p = sample_problem(rng, difficulty)
        if p not in seen and p not in exclude:
            seen.add(p)
            out.append(p)
    return tuple(out)


def problem_row(problem: Problem, row_id: str) -> dict:
    """One dataset row for a lab problem."""
    text = problem.text()
    return {
        "id": row_id,
        "problem": text,
        "prompt": chat_prompt(text),
        "answer": str(problem.answer),
        "solution": oracle_trace(problem).text,
    }


def lab_dataset(split: str = "test", limit: int | None = None) -> Dataset:
    """Load a lab split (``train``, ``test``, ``hard``, ``dev``, ``mixed``, ``mixed_cal`` or ``mixed_train``)."""
    from datasets import Dataset  # imported here: the problems alone need no ``datasets``

    problems = lab_problems(split)[:limit]
    return Dataset.from_list([problem_row(p, f"lab/{split}/{i}") for i, p in enumerate(problems)])
