"""Grade each benchmark's own gold solutions against its gold answers: the grader's sanity figure.

A correct grader must mark (nearly) every gold solution correct: GSM8K test worked solutions
(``#### n``) against n, MATH-500 solutions (``\\boxed{...}``) against the ``answer`` field. The
script prints, per benchmark, n, the number correct, accuracy, wall time and the failing ids with
what was extracted. Grading settings are each benchmark's own (``BENCHMARKS[name]``).

Most gold solutions match their gold string after normalisation, so the grader's fast path decides
them without math-verify. A second line per benchmark ("math-verify only") therefore sends every
extracted answer to the sandboxed math-verify check, skipping the fast path.

    python eval/check_grader.py [--data-dir DIR] [--num-workers 2] [--timeout-s 5]

``--data-dir`` defaults to ``$EFFREASON_BENCHMARKS_DIR``, else ``<repo>/../shared/data/benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from effreason.benchmarks import BENCHMARKS, load_benchmark
from effreason.grading import Grader, extract_answer
from effreason.grading.extract import clean_answer
from effreason.grading.sandbox import SandboxPool, WorkerError, WorkerTimeout

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"
CHECKS = (("gsm8k", "test"), ("math500", "test"))


def check(name: str, split: str, data_dir: str, num_workers: int, timeout_s: float) -> None:
    data = load_benchmark(name, data_dir=data_dir, split=split)
    spec = BENCHMARKS[name]
    start = time.perf_counter()
    with Grader(spec.grading_mode, timeout_s=timeout_s, num_workers=num_workers,
                last_number_fallback=spec.last_number_fallback) as grader:
        results = grader.grade_batch(data["solution"], data["answer"])
    wall_s = time.perf_counter() - start
    n_correct = sum(r.correct for r in results)
    print(f"{name}/{split}: n={len(results)} correct={n_correct} accuracy={n_correct / len(results):.4f} "
          f"wall={wall_s:.1f}s (num_workers={num_workers}, timeout_s={timeout_s})")
    failures = [(row_id, gold, r) for row_id, gold, r in zip(data["id"], data["answer"], results, strict=True)
                if not r.correct]
    print(f"  failing ids ({len(failures)}):" + ("" if failures else " none"))
    for row_id, gold, r in failures:
        print(f"    {row_id}: reason={r.reason} extracted={r.extracted!r} gold={gold!r}")


def check_math_verify_only(name: str, split: str, data_dir: str, num_workers: int, timeout_s: float) -> None:
    data = load_benchmark(name, data_dir=data_dir, split=split)
    spec = BENCHMARKS[name]
    pool = SandboxPool(num_workers)

    def agrees(row: dict) -> str:
        pred = extract_answer(row["solution"], last_number_fallback=spec.last_number_fallback)
        if pred is None:
            return "no_answer"
        try:
            reply = pool.request({"pred": pred, "gold": clean_answer(row["answer"])}, timeout_s)
        except WorkerTimeout:
            return "timeout"
        except WorkerError:
            return "error"
        return "correct" if reply.get("equal") else "wrong"

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(num_workers) as executor:
            reasons = list(executor.map(agrees, data))
    finally:
        pool.close()
    wall_s = time.perf_counter() - start
    n_correct = reasons.count("correct")
    print(f"{name}/{split} math-verify only: n={len(reasons)} correct={n_correct} "
          f"accuracy={n_correct / len(reasons):.4f} wall={wall_s:.1f}s")
    failures = [(row_id, r) for row_id, r in zip(data["id"], reasons, strict=True) if r != "correct"]
    print(f"  failing ids ({len(failures)}):" + ("" if failures else " none"))
    for row_id, reason in failures:
        print(f"    {row_id}: reason={reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("EFFREASON_BENCHMARKS_DIR", str(DEFAULT_DATA_DIR)))
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=5.0)
    args = parser.parse_args()
    for name, split in CHECKS:
        check(name, split, args.data_dir, args.num_workers, args.timeout_s)
        check_math_verify_only(name, split, args.data_dir, args.num_workers, args.timeout_s)


if __name__ == "__main__":
    main()
