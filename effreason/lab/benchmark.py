"""The lab as benchmarks found by name: ``lab`` (the test split, ``dev`` for held-out tuning), ``lab_hard`` (the
hard split) and ``lab_mixed`` (one to eight steps, where routing between a base that answers directly and a
reasoning adapter matters: ``test``, ``calibration`` and ``train`` splits).

``effreason.benchmarks`` imports this module the first time either name is looked up
(``BENCHMARK_MODULES``), so evaluation knows the lab only through these specs: rows made in-process,
graded exactly, the lab-word answer lead-in for budget forcing, and a completion cap that fits the
lab model's 512 positions (lab traces stay under ~300 tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effreason.benchmarks import BenchmarkSpec
from effreason.lab.traces import ANSWER_PREFIX

if TYPE_CHECKING:
    import datasets

#: Forced after ``</think>``: the lab tokenizer is word-level, so the lead-in uses lab words only.
LAB_ANSWER_PREFIX = " " + ANSWER_PREFIX
LAB_MAX_NEW_TOKENS = 384


def load_lab_split(split: str) -> datasets.Dataset:
    """A lab split (``train``, ``test``, ``hard``, ``dev``, ``mixed``, ``mixed_cal``, ``mixed_train``) as a benchmark
    Dataset."""
    from effreason.lab.datasets import lab_dataset  # datasets is heavy: imported when rows are wanted

    return lab_dataset(split)


def _lab_spec(name: str, splits: dict[str, str]) -> BenchmarkSpec:
    return BenchmarkSpec(name=name, splits=splits, loader=load_lab_split, grading_mode="exact", instruction=None,
                         answer_prefix=LAB_ANSWER_PREFIX, max_new_tokens=LAB_MAX_NEW_TOKENS)


BENCHMARK_SPECS = (
    _lab_spec("lab", {"train": "train", "test": "test", "dev": "dev"}),
    _lab_spec("lab_hard", {"test": "hard", "hard": "hard"}),
    _lab_spec("lab_mixed", {"test": "mixed", "calibration": "mixed_cal", "train": "mixed_train"}),
)
