"""Check that two eval runs ended with the same results (e.g. a killed-and-resumed run vs an uninterrupted one).

Compares results.json without what describes one invocation (timing, resumed rows, output path and
other settings that do not change results) and samples.jsonl as sets of rows. Exit status 0 = same.

    python eval/diff_runs.py runs/eval/lab-budgets runs/eval/lab-resume
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from effreason.evaluation.config import NON_RESULT_FIELDS
from effreason.evaluation.report import TIMING_KEYS


def outcome(run: Path) -> dict:
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    results["config"] = {k: v for k, v in results["config"].items() if k not in NON_RESULT_FIELDS}
    return {k: v for k, v in results.items() if k not in TIMING_KEYS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    ra, rb = outcome(args.a), outcome(args.b)
    differing = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
    rows_a = sorted((args.a / "samples.jsonl").read_text(encoding="utf-8").splitlines())
    rows_b = sorted((args.b / "samples.jsonl").read_text(encoding="utf-8").splitlines())
    print(f"results.json keys that differ (timing and output path excluded): {differing or 'none'}")
    print(f"samples.jsonl: {len(rows_a)} vs {len(rows_b)} rows; identical as sets: {rows_a == rows_b}")
    return 0 if not differing and rows_a == rows_b else 1


if __name__ == "__main__":
    sys.exit(main())
