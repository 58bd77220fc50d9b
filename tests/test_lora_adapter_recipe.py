"""recipes/lora_adapter.py end to end (issue 16): a short lab run on the shipped direct-answer base, and the
shipped real-model config with its hub model swapped for a tiny random Qwen2 with an R1-style BPE tokenizer
(all three stages: SFT, RL on the adapter, router; then the comparison)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import load_recipe

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "recipes" / "configs" / "lab" / "lora_adapter.yaml"
REAL = ROOT / "recipes" / "configs" / "qwen1.5b" / "lora_adapter.yaml"


def _config(path: Path, source: Path, **changes) -> Path:
    config = yaml.safe_load(source.read_text())
    rl = {**config.get("rl", {}), **changes.pop("rl", {})}
    config.update(changes, rl=rl, report_to=["none"])
    path.write_text(yaml.safe_dump(config))
    return path


def _file_sha(path: Path) -> str:
    from effreason.outputs import file_sha256

    return file_sha256(path)


@pytest.mark.slow
def test_lab_run_writes_adapter_router_and_comparison(tmp_path):
    from effreason.models import LAB_BASE_DIR

    before = _file_sha(LAB_BASE_DIR / "model.safetensors")
    out = tmp_path / "run"
    config = _config(tmp_path / "c.yaml", LAB, output_dir=str(out), num_traces=64, router_problems=120,
                     router_calibration_problems=120, eval_limit=8, compare_vllm=False, compare_sft=True,
                     rl={"max_steps": 2, "per_device_train_batch_size": 12, "max_completion_length": 48})
    assert load_recipe("lora_adapter").main(["--config", str(config)]) == 0
    assert _file_sha(LAB_BASE_DIR / "model.safetensors") == before  # RL trained the adapter alone
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(LAB_BASE_DIR)
    assert json.loads((out / "adapter" / "effreason_adapter.json").read_text())["buckets"]["short"]["tokens"] == 64
    assert (out / "router" / "router.json").is_file() and (out / "router" / "router.safetensors").is_file()
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    runs = {(r["benchmark"], r["run"]) for r in rows}
    assert {(b, r) for b in ("lab_mixed", "lab") for r in ("base", "adapter", "routed")} <= runs
    assert ("lab", "sft-short") in runs and ("lab_mixed", "sft") not in runs  # before RL, on the last benchmark
    routed = [json.loads(line) for line in (out / "eval" / "lab_mixed" / "routed" / "samples.jsonl").read_text()
              .splitlines()]
    assert all(r["method_info"]["route"] in ("base", "adapter") for r in routed)
    # a rerun reuses every stage (nothing retrained, the router kept)
    router_sha = _file_sha(out / "router" / "router.json")
    assert load_recipe("lora_adapter").main(["--config", str(config)]) == 0
    assert _file_sha(out / "router" / "router.json") == router_sha
    changed = _config(tmp_path / "c2.yaml", config, router_confidence=0.5)  # a stale router is never reused
    with pytest.raises(ValueError, match="router built with other settings"):
        load_recipe("lora_adapter").main(["--config", str(changed)])


def test_real_model_config_parses():
    from trl import ModelConfig, SFTConfig

    from effreason.adapters.args import LoRAAdapterArguments, rl_config
    from effreason.evaluation.posttrain import EvalArguments
    from effreason.training.args import parse_config

    recipe, eval_args, sft, model = parse_config((LoRAAdapterArguments, EvalArguments, SFTConfig, ModelConfig),
                                                 ["--config", str(REAL), "--output_dir", "/tmp/x",
                                                  "--bf16", "false"])  # bf16 needs a GPU
    assert model.use_peft and 64 <= model.lora_r <= 128
    assert rl_config(recipe.rl, sft, "/tmp/x/rl").use_vllm
    assert [b for b in recipe.buckets] == ["short", "medium", "long"]


def test_a_bad_vllm_check_size_is_refused():
    from effreason.adapters.args import LoRAAdapterArguments

    with pytest.raises(ValueError, match="compare_vllm_limit must be >= 1"):
        LoRAAdapterArguments(compare_vllm_limit=0)


def test_a_typo_in_the_rl_block_names_the_closest_key(tmp_path):
    config = _config(tmp_path / "c.yaml", LAB, output_dir=str(tmp_path / "o"), rl={"num_generation": 4})
    with pytest.raises(ValueError, match="unknown setting.*'num_generation' \\(did you mean 'num_generations'"):
        load_recipe("lora_adapter").main(["--config", str(config)])
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_real_config_runs_all_stages_on_a_tiny_bpe_model(tiny_bpe_model, benchmarks_dir, tmp_path):
    from test_shipped_configs import write_traces

    out = tmp_path / "run"
    traces = write_traces(tmp_path / "traces.jsonl", benchmarks_dir, num=16)
    config = _config(
        tmp_path / "c.yaml", REAL, model_name_or_path=str(tiny_bpe_model), output_dir=str(out), dtype="float32",
        traces=str(traces), data_dir=str(benchmarks_dir), bf16=False, use_cpu=True, gradient_checkpointing=False,
        max_length=512, per_device_train_batch_size=4, gradient_accumulation_steps=1, router_problems=16,
        router_calibration_problems=16, router_max_new_tokens=16, eval_limit=2, eval_max_new_tokens=16,
        eval_backend="hf", compare_benchmarks=["gsm8k"], rl_dataset="gsm8k", rl_dataset_limit=8,
        router_dataset="gsm8k",
        rl={"max_steps": 1, "use_vllm": False, "bf16": False, "gradient_checkpointing": False,
            "num_generations": 2, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "max_completion_length": 16})
    assert load_recipe("lora_adapter").main(["--config", str(config)]) == 0
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 64
    assert (out / "rl" / "training_done.json").is_file() and (out / "router" / "router.json").is_file()
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert {r["run"] for r in rows} >= {"base", "adapter", "routed", "adapter-short", "sft"}
