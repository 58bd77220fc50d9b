"""Robustness of the lab bootstrap: the documented command for each seed x thread count, as a table.

    effreason lab bootstrap-grid --out runs/lab-grid                        # 3 seeds x {1, 2} threads
    effreason lab bootstrap-grid --out runs/lab-grid --seeds 1 --threads 1  # one cell (run cells in parallel)

Each cell runs ``effreason lab bootstrap --seed S --threads T --keep-failed`` in its own process into
``OUT/s<S>-t<T>`` (a finished cell there is read back, not rerun) and the table lists, per cell: the
steps trained, the gate checks (``phase@step:accuracy/ratio``; the first check is what the schedule
alone gave, the old behaviour), test accuracy, tokens / oracle, hard accuracy, the command's wall
seconds and the 1-minute load average at its start and end (timings on a shared machine are noisy).
Target: accuracy >= 0.95 and tokens >= 2.5x oracle in every cell, each within 10 minutes on 2 cores.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

#: What every cell must reach on the test split.
MIN_ACCURACY, MIN_TOKENS_RATIO, MAX_WALL_S = 0.95, 2.5, 600.0


def run_cell(out: Path, seed: int, threads: int) -> dict:
    """One bootstrap in a fresh process (threads, RNGs and kernels as a user's run has them)."""
    cell = out / f"s{seed}-t{threads}"
    if not (cell / "metrics.json").is_file():
        load_start, start = os.getloadavg()[0], time.perf_counter()
        cmd = [sys.executable, "-m", "effreason.cli", "lab", "bootstrap", "--out", str(cell), "--seed", str(seed),
               "--threads", str(threads), "--keep-failed"]
        logger.info("cell seed %d threads %d: %s", seed, threads, " ".join(cmd))
        subprocess.run(cmd, check=True)
        bench = {"wall_s": time.perf_counter() - start, "load_start": load_start, "load_end": os.getloadavg()[0]}
        (cell / "bench.json").write_text(json.dumps(bench, indent=2) + "\n")
    metrics = json.loads((cell / "metrics.json").read_text())
    bench = json.loads((cell / "bench.json").read_text()) if (cell / "bench.json").is_file() else {}
    return {"seed": seed, "threads": threads, **metrics, **bench}


def cell_row(r: dict) -> str:
    """One markdown table row of a cell."""
    gate = r.get("gate", {})
    checks = " ".join(f"{c['phase'][0]}@{c['step']}:{c['accuracy']:.3f}/{c['tokens_ratio']:.2f}"
                      for c in gate.get("checks", []))
    ok = (r["accuracy"] >= MIN_ACCURACY and r["tokens_ratio"] >= MIN_TOKENS_RATIO
          and r.get("wall_s", 0.0) <= MAX_WALL_S)
    return (f"| {r['seed']} | {r['threads']} | {r.get('steps_trained', '?')} | {checks or '-'} | {r['accuracy']:.3f} | "
            f"{r['tokens_ratio']:.2f} | {r['hard_accuracy']:.3f} | {r.get('wall_s', float('nan')):.0f} | "
            f"{r.get('load_start', float('nan')):.1f} / {r.get('load_end', float('nan')):.1f} | "
            f"{'yes' if ok else 'NO'} |")


def bootstrap_grid(out: str | Path, *, seeds: Sequence[int] = (0, 1, 2), threads: Sequence[int] = (1, 2),
                   warmups: bool = False) -> list[dict]:
    """Run (or read back) every cell and print the table; returns the cells' metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| seed | threads | steps | gate checks (c=concise, f=final: dev acc/ratio) | accuracy | tokens/oracle | "
          "hard acc | wall s | load start / end | target met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        for n in threads:
            rows.append(run_cell(out, seed, n))
            print(cell_row(rows[-1]), flush=True)
    if warmups:
        from effreason.lab.trainers.warmup_gates import warmup_grid

        warmup_grid([out / f"s{r['seed']}-t{r['threads']}" for r in rows])
    return rows
