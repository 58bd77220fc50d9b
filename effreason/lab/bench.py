"""Robustness of the lab bootstrap: the documented command for each seed x thread count, as a table.

    effreason lab bootstrap-grid --out runs/lab-grid                        # 3 seeds x {1, 2} threads
    effreason lab bootstrap-grid --out runs/lab-grid --seeds 1 --threads 1  # one cell (run cells in parallel)

Each cell runs ``effreason lab bootstrap --seed S --threads T --keep-failed`` in its own process into
``OUT/s<S>-t<T>`` (a finished cell there is read back, not rerun) and the table lists, per cell: the
steps trained, the gate checks (``@step:dev accuracy/tokens ratio``; the first check is what the schedule
alone gave, the old behaviour), test accuracy, tokens / oracle, hard accuracy, the command's wall
seconds and the 1-minute load average at its start and end (timings on a shared machine are noisy).
Target: accuracy >= 0.95 and tokens >= 2.5x oracle in every cell, each within 10 minutes on 2 cores.

The warm-ups that start the SFT and TLDR lab defaults, the same way (600 steps each, as their
recipes run them; checks in each warm-up's ``warmup_gate.json``, the first one is the old behaviour)::

    effreason lab warmup-grid --out runs/warmup-grid [--model lab] [--kinds slippy,levels]
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
    checks = " ".join(f"{c.get('phase', '')[:1]}@{c['step']}:{c['accuracy']:.3f}/{c['tokens_ratio']:.2f}"
                      for c in gate.get("checks", []))
    ok = (r["accuracy"] >= MIN_ACCURACY and r["tokens_ratio"] >= MIN_TOKENS_RATIO
          and r.get("wall_s", 0.0) <= MAX_WALL_S)
    return (f"| {r['seed']} | {r['threads']} | {r.get('steps_trained', '?')} | {checks or '-'} | {r['accuracy']:.3f} | "
            f"{r['tokens_ratio']:.2f} | {r['hard_accuracy']:.3f} | {r.get('wall_s', float('nan')):.0f} | "
            f"{r.get('load_start', float('nan')):.1f} / {r.get('load_end', float('nan')):.1f} | "
            f"{'yes' if ok else 'NO'} |")


def bootstrap_grid(out: str | Path, *, seeds: Sequence[int] = (0, 1, 2), threads: Sequence[int] = (1, 2)) -> list[dict]:
    """Run (or read back) every cell and print the table; returns the cells' metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| seed | threads | steps | gate checks (@step: dev acc/ratio) | accuracy | tokens/oracle | "
          "hard acc | wall s | load start / end | target met |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        for n in threads:
            rows.append(run_cell(out, seed, n))
            print(cell_row(rows[-1]), flush=True)
    return rows


#: The TLDR lab default's level instructions and re-drawn words (recipes/configs/lab/tldr.yaml).
TLDR_LEVELS = {"short": "level short", "medium": "level medium", "long": "level long"}
TLDR_REINIT = ["level", "short", "medium", "long"]
WARMUP_STEPS = 600


def warmup_cell(kind: str, model: str, out: Path, seed: int, threads: int) -> dict:
    """One warm-up (``slippy`` or ``levels``) of ``model`` in a fresh process; its checks and wall time."""
    cell = out / f"{kind}-s{seed}-t{threads}"
    if not (cell / "bench.json").is_file():
        load_start, start = os.getloadavg()[0], time.perf_counter()
        cmd = [sys.executable, "-m", "effreason.lab.bench", kind, model, str(cell / "model"), str(seed), str(threads)]
        logger.info("warm-up %s seed %d threads %d: %s", kind, seed, threads, " ".join(cmd))
        done = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
        gate = next((f for f in (cell / "model" / "warmup_gate.json", cell / "failed_gate.json") if f.is_file()), None)
        result = json.loads(gate.read_text()) if gate else {"error": done.stderr.strip().splitlines()[-1:]}
        result.update(wall_s=time.perf_counter() - start, load_start=load_start, load_end=os.getloadavg()[0])
        cell.mkdir(parents=True, exist_ok=True)
        (cell / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return {"kind": kind, "seed": seed, "threads": threads, **json.loads((cell / "bench.json").read_text())}


def _check_text(kind: str, check: dict) -> str:
    if kind == "slippy":
        return f"acc {check['accuracy']:.3f} slips caught {check['slip_rate']:.2f} tok {check['tokens_mean']:.0f}"
    return " ".join(f"{n} {check[n]['accuracy']:.3f}/{check[n]['tokens_mean']:.0f}" for n in TLDR_LEVELS if n in check)


def warmup_grid(out: str | Path, *, model: str = "lab", kinds: Sequence[str] = ("slippy", "levels"),
                seeds: Sequence[int] = (0, 1, 2), threads: Sequence[int] = (1, 2)) -> list[dict]:
    """Run (or read back) every warm-up cell and print the table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    print("| warm-up | seed | threads | first check (old behaviour) | last check | extra steps | passed | wall s | "
          "load start / end |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for kind in kinds:
        for seed in seeds:
            for n in threads:
                r = warmup_cell(kind, model, out, seed, n)
                rows.append(r)
                checks = r.get("checks") or []
                first, last = (_check_text(kind, checks[0]), _check_text(kind, checks[-1])) if checks else ("-", "-")
                print(f"| {kind} | {seed} | {n} | {first} | {last} | {checks[-1]['step'] if checks else '-'} | "
                      f"{checks[-1]['passed'] if checks else r.get('error')} | {r['wall_s']:.0f} | "
                      f"{r['load_start']:.1f} / {r['load_end']:.1f} |", flush=True)
    return rows


def _warmup_main(kind: str, model: str, out: str, seed: str, threads: str) -> None:
    """One warm-up cell, as its recipe runs it (``warmup_cell`` starts this in a fresh process)."""
    import torch

    from effreason.models import resolve_model_path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from effreason.lab.trainers.bootstrap import GateFailed
    from effreason.lab.trainers.levels import warm_started_model
    from effreason.lab.trainers.warmup import slippy_start_model

    torch.set_num_threads(int(threads))
    path = resolve_model_path(model)
    try:
        if kind == "slippy":
            slippy_start_model(path, out, steps=WARMUP_STEPS, seed=int(seed), threads=int(threads))
        else:
            warm_started_model(path, out, TLDR_LEVELS, steps=WARMUP_STEPS, reinit_words=TLDR_REINIT, seed=int(seed))
    except GateFailed as e:  # the cell's figures are kept next to the (unsaved) model
        (Path(out).parent / "failed_gate.json").write_text(json.dumps({"checks": e.checks, "error": str(e)}) + "\n")
        raise


if __name__ == "__main__":
    _warmup_main(*sys.argv[1:])
