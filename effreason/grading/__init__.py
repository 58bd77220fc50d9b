"""The one answer extractor and correctness check shared by RL rewards and evaluation.

Example::

    from effreason.grading import Grader

    with Grader("math", num_workers=2) as grader:
        results = grader.grade_batch(completions, golds)
    accuracy = sum(r.correct for r in results) / len(results)
"""

from effreason.grading.extract import answer_key, extract_answer
from effreason.grading.grader import MODES, REASONS, Grader, GradeResult, grade

__all__ = ["MODES", "REASONS", "GradeResult", "Grader", "answer_key", "extract_answer", "grade"]
