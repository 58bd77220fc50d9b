"""Build a ``--completions`` JSONL from gold solutions (GSM8K test + MATH-500), to check the grading path.

Each row is ``{id, source, prompt, completion, answer}``. MATH-500 solutions already end in
``\\boxed{}``; GSM8K's end in ``#### <number>``, which becomes ``The answer is \\boxed{<number>}``.
With ``--grade`` the script also grades the rows with ``effreason.grading.Grader`` directly and
prints the per-source accuracy, the figure ``effreason eval --completions`` must reproduce.
``--mismatch`` pairs completions with wrong golds, to time grading when every row needs math-verify.

Commands used for the eval report::

    python eval/gold_completions.py --data-dir ../shared/data/benchmarks --out runs/eval/gold.jsonl --grade
    effreason eval --completions runs/eval/gold.jsonl --output runs/eval/gold
    python eval/gold_completions.py --data-dir ../shared/data/benchmarks --out runs/eval/mismatch.jsonl --mismatch
    effreason eval --completions runs/eval/mismatch.jsonl --limit 1000 --output runs/eval/mismatch
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from effreason.benchmarks import load_benchmark
from effreason.jsonl import write_jsonl


def gsm8k_completion(solution: str) -> str:
    """The worked solution with its ``#### n`` line turned into a boxed answer."""
    head, _, tail = solution.rpartition("####")
    return f"{head.rstrip()}\nThe answer is \\boxed{{{tail.strip().replace(',', '')}}}."


def build_rows(data_dir: str | None, limit: int | None) -> list[dict]:
    rows = []
    for name in ("gsm8k", "math500"):
        for row in load_benchmark(name, data_dir=data_dir, split="test", limit=limit):
            completion = gsm8k_completion(row["solution"]) if name == "gsm8k" else row["solution"]
            rows.append({"id": f"{name}:{row['id']}", "source": name, "prompt": row["problem"],
                         "completion": completion, "answer": row["answer"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="offline benchmark copies (default: $EFFREASON_DATA_DIR, else the Hub)")
    parser.add_argument("--out", required=True, help="JSONL to write")
    parser.add_argument("--limit", type=int, help="first N rows of each benchmark")
    parser.add_argument("--grade", action="store_true", help="also grade directly and print per-source accuracy")
    parser.add_argument("--mismatch", action="store_true",
                        help="pair each completion with the next row's gold: nearly all wrong, so every row takes "
                             "the slow math-verify path (a grading-speed worst case)")
    args = parser.parse_args()

    rows = build_rows(args.data_dir, args.limit)
    if args.mismatch:
        golds = [r["answer"] for r in rows]
        for row, gold in zip(rows, golds[1:] + golds[:1], strict=True):
            row["answer"] = gold
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} rows to {args.out}")
    if args.grade:
        from effreason.grading import Grader

        with Grader("math") as grader:
            grades = grader.grade_batch([r["completion"] for r in rows], [r["answer"] for r in rows])
        hits: dict[str, list[bool]] = defaultdict(list)
        for row, grade in zip(rows, grades, strict=True):
            hits[row["source"]].append(grade.correct)
        for source, ok in hits.items():
            print(f"grader on {source} gold solutions: {sum(ok)}/{len(ok)} = {sum(ok) / len(ok):.4f}")
        total = sum(g.correct for g in grades)
        print(f"all: {total}/{len(grades)} = {total / len(grades):.4f}")


if __name__ == "__main__":
    main()
