"""End-to-end runs of recipes/lgrpo.py and recipes/tldr.py on the lab (tiny settings, real training).

Each run is a subprocess, as users launch it: config YAML + command-line overrides.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "model_name_or_path": "lab", "dtype": "float32", "dataset": "lab", "dataset_split": "train",
    "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 48,
    "temperature": 0.7, "loss_type": "dapo", "epsilon_high": 0.28, "beta": 0.0, "scale_rewards": "batch",
    "learning_rate": 3.0e-4, "bf16": False, "use_cpu": True, "seed": 0, "logging_steps": 1,
    "save_strategy": "steps", "save_steps": 1, "report_to": "none", "eval_benchmark": "lab", "eval_limit": 6,
    "eval_max_new_tokens": 64,
}


def run_recipe(recipe: str, config: dict, tmp_path: Path, *extra: str, launcher: list[str] | None = None,
               timeout: int = 600, ok: bool = True) -> subprocess.CompletedProcess:
    cfg = tmp_path / f"{recipe}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [*(launcher or [sys.executable]), str(ROOT / "recipes" / f"{recipe}.py"), "--config", str(cfg), *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 or not ok, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def log_rows(path: Path) -> list[dict]:
    return [row for row in map(json.loads, path.read_text().splitlines()) if "reward" in row]


@pytest.mark.slow
def test_lgrpo_both_stages_train_save_log_and_compare(tmp_path):
    out = tmp_path / "out"
    config = {**TINY, "output_dir": str(out), "stage": "both",
              "stage1": {"max_steps": 1, "rewards": [{"name": "correctness", "mode": "exact"}],
                         "dynamic_sampling": True, "entropy_coef": 0.001},
              "stage2": {"max_steps": 2, "rewards": [{"name": "lgrpo", "alpha": 0.5, "mode": "exact"}],
                         "dynamic_sampling": True}}
    run_recipe("lgrpo", config, tmp_path)
    for stage, steps in (("stage1", 1), ("stage2", 2)):
        done = json.loads((out / stage / "training_done.json").read_text())
        assert done["global_step"] == steps
        assert (out / stage / "model.safetensors").is_file() and not list((out / stage).glob("*.bin"))
        rows = log_rows(out / stage / "train_log.jsonl")
        assert [r["step"] for r in rows] == list(range(1, steps + 1))
        for key in ("completions/mean_length", "completions/tokens_p90", "reward/frac_all_correct_groups",
                    "clip_ratio/high_mean", "dynamic_sampling/kept_groups", "entropy"):
            assert key in rows[0], (stage, key, sorted(rows[0]))
    stage2 = json.loads((out / "stage2" / "stage_config.json").read_text())  # the resolved settings, saved
    assert stage2["from_stage_block"]["max_steps"] == 2 and stage2["grpo"]["max_steps"] == 2
    assert stage2["recipe"]["rewards"][0]["name"] == "lgrpo"
    assert "rewards/correctness/mean" in log_rows(out / "stage1" / "train_log.jsonl")[0]
    assert "rewards/lgrpo/mean" in log_rows(out / "stage2" / "train_log.jsonl")[0]
    rows = {r["run"]: r for r in json.loads((out / "comparison.json").read_text())}
    assert set(rows) == {"start", "stage1", "stage2"} and all(r["n"] == 6 for r in rows.values())
    assert (out / "comparison.png").stat().st_size > 10_000
    assert (out / "eval" / "stage2" / "results.json").is_file()


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "out"
    config = {**TINY, "output_dir": str(out), "stage": "2", "max_steps": 3, "eval_benchmark": "none",
              "rewards": [{"name": "lgrpo", "alpha": 0.5, "mode": "exact"}]}
    run_recipe("lgrpo", config, tmp_path)
    assert (out / "checkpoint-3").is_dir()
    # as if the run had been killed after its second checkpoint (a resume needs the same settings: max_steps too)
    (out / "training_done.json").unlink()
    shutil.rmtree(out / "checkpoint-3")
    log = out / "train_log.jsonl"
    log.write_text("".join(f"{line}\n" for line in log.read_text().splitlines() if json.loads(line)["step"] <= 2))
    run_recipe("lgrpo", config, tmp_path, "--resume_from_checkpoint", "true")
    done = json.loads((out / "training_done.json").read_text())
    assert done["global_step"] == 3 and done["resumed_from"].endswith("checkpoint-2")
    steps = [r["step"] for r in log_rows(out / "train_log.jsonl")]
    assert steps == [1, 2, 3]  # the resumed run logged only step 3
    # a finished stage is skipped when resuming again, with the same settings only
    run_recipe("lgrpo", config, tmp_path, "--resume_from_checkpoint", "true")
    assert [r["step"] for r in log_rows(out / "train_log.jsonl")] == [1, 2, 3]
    proc = run_recipe("lgrpo", {**config, "max_steps": 4}, tmp_path, "--resume_from_checkpoint", "true", ok=False)
    assert proc.returncode == 2 and "grpo.max_steps: 3 -> 4" in proc.stderr


@pytest.mark.slow
def test_tldr_levels_in_prompts_reward_and_eval(tmp_path):
    out = tmp_path / "out"
    config = {**TINY, "output_dir": str(out), "max_steps": 2, "rewards": [{"name": "tldr", "mode": "exact"}],
              "levels": {"short": {"budget": 16}, "long": {"budget": 64, "lambda": 0.5}}}
    run_recipe("tldr", config, tmp_path)
    rows = log_rows(out / "train_log.jsonl")
    assert len(rows) == 2 and "rewards/tldr/mean" in rows[0]
    runs = {r["run"]: r for r in json.loads((out / "comparison.json").read_text())}
    assert set(runs) == {"start", "short", "long"}
    short_cfg = json.loads((out / "eval" / "short" / "config.json").read_text())
    assert "level short" in json.dumps(short_cfg)


@pytest.mark.slow
def test_lora_switch_trains_and_evaluates_an_adapter(tmp_path):
    out = tmp_path / "out"
    config = {**TINY, "output_dir": str(out), "stage": "2", "max_steps": 2, "save_strategy": "no",
              "use_peft": True, "lora_r": 8, "lora_alpha": 16, "learning_rate": 1.0e-2,
              "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
              "rewards": [{"name": "lgrpo", "alpha": 0.5, "mode": "exact"}]}
    run_recipe("lgrpo", config, tmp_path)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert not (out / "model.safetensors").exists()  # the artifact is the adapter, not a full copy
    results = json.loads((out / "eval" / "stage2" / "results.json").read_text())
    assert results["adapter"] == str(out) and results["n"] == 6


@pytest.mark.slow
def test_two_process_torchrun_keeps_groups_whole(tmp_path):
    """Two real processes (gloo): each gets a contiguous slice of the generation batch; group rewards
    raise if a group is split, and the start-up check rejects layouts that would split one."""
    out = tmp_path / "out"
    config = {**TINY, "output_dir": str(out), "stage": "2", "max_steps": 3, "eval_benchmark": "none",
              "per_device_train_batch_size": 4,
              "rewards": [{"name": "lgrpo", "alpha": 0.5, "mode": "exact"}]}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29631"]
    proc = run_recipe("lgrpo", config, tmp_path, launcher=torchrun)
    done = json.loads((out / "training_done.json").read_text())
    assert done["global_step"] == 3
    assert len(log_rows(out / "train_log.jsonl")) == 3, proc.stderr[-2000:]
    # both processes resume from the checkpoint (optimizer state mapped to the CPU, see grpo.py), as if the
    # run had been killed after step 2 (a resume needs the same settings)
    (out / "training_done.json").unlink()
    shutil.rmtree(out / "checkpoint-3")
    run_recipe("lgrpo", config, tmp_path, "--resume_from_checkpoint", "true", launcher=torchrun)
    done = json.loads((out / "training_done.json").read_text())
    assert done["global_step"] == 3 and done["resumed_from"].endswith("checkpoint-2")
    # 2 rows per process with groups of 4: TRL accepts the global batch of 4, but each process would
    # hold half a group; refused at start-up with the fix in the message
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({**config, "per_device_train_batch_size": 2, "steps_per_generation": 1,
                                   "output_dir": str(tmp_path / "bad")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    failed = subprocess.run([*torchrun, str(ROOT / "recipes" / "lgrpo.py"), "--config", str(cfg)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert failed.returncode != 0
    assert "multiple of num_generations" in failed.stderr


@pytest.mark.vllm
@pytest.mark.slow
def test_lgrpo_with_vllm_colocate_rollouts_improves_reward(tmp_path):
    """vLLM (CPU) generates the rollouts inside the trainer; the weights are synced every step
    (effreason.training.vllm_sync), so the policy vLLM samples from is the one being trained, and the
    L-GRPO reward rises while completions shorten, as with HF generation."""
    pytest.importorskip("vllm")
    out = tmp_path / "out"
    config = {**TINY, "output_dir": str(out), "stage": "2", "max_steps": 14, "eval_benchmark": "none",
              "save_strategy": "no", "per_device_train_batch_size": 32, "num_generations": 8,
              "max_completion_length": 320, "use_vllm": True, "vllm_mode": "colocate", "vllm_dtype": "float32",
              "vllm_gpu_memory_utilization": 0.3, "vllm_max_model_length": 512, "gradient_checkpointing": False,
              "rewards": [{"name": "lgrpo", "alpha": 1.0, "mode": "exact"}]}
    proc = run_recipe("lgrpo", config, tmp_path, timeout=900)
    assert "weight sync through vLLM's layer-wise reload" in proc.stderr
    rows = log_rows(out / "train_log.jsonl")
    assert len(rows) == 14 and all("rollout/tokens_per_s" in r for r in rows)
    first, last = rows[:4], rows[-4:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "rewards/lgrpo/mean") > mean(first, "rewards/lgrpo/mean") + 0.05
    assert mean(last, "completions/mean_length") < 0.85 * mean(first, "completions/mean_length")
