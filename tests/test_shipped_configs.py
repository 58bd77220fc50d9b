"""Every shipped real-model config runs, not only parses (issue 12).

Each ``recipes/configs/qwen1.5b/*.yaml`` runs for one step through ``accelerate launch`` with a shipped
``launch/accelerate/*.yaml``, with the hub model swapped for a tiny random model built here: a 2-layer
Qwen2 with a byte-level BPE tokenizer trained on GSM8K / MATH lines and DeepSeek-R1-Distill's chat
template (``<think>`` opened in the generation prompt), on the offline benchmark copies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: DeepSeek-R1-Distill-Qwen's special tokens.
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"

#: DeepSeek-R1-Distill-Qwen's chat template, shortened to what the recipes use (no tools): the system
#: text first, assistant turns keep only the text after ``</think>``, and the generation prompt opens
#: ``<think>``.
R1_CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{%- endif %}"
    "{%- endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)


def _corpus(benchmarks: Path, rows: int = 300) -> list[str]:
    lines = []
    for name, fields in (("gsm8k/train.jsonl", ("question", "answer")), ("math500/test.jsonl", ("problem", "solution"))):
        with open(benchmarks / name, encoding="utf-8") as f:
            for _, line in zip(range(rows), f, strict=False):
                row = json.loads(line)
                lines += [row[k] for k in fields]
    return lines


def build_tiny_r1(path: Path, benchmarks: Path, *, seed: int = 0) -> Path:
    """Save a random 2-layer Qwen2 with an R1-style byte-level BPE tokenizer to ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=[BOS, EOS, USER, ASSISTANT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(_corpus(benchmarks), trainer)
    # as R1-Distill's: pad = eos; <think> and </think> are added (not special) tokens
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                  model_max_length=16384, clean_up_tokenization_spaces=False)
    tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = R1_CHAT_TEMPLATE
    tok.save_pretrained(path)
    torch.manual_seed(seed)
    # head size 64: vLLM's CPU attention supports 32, 64, 80, ... only
    # the embedding table padded past the tokenizer, as R1-Distill's (151936 rows, 151665 tokens)
    config = Qwen2Config(vocab_size=len(tok) + 62, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         initializer_range=0.2)  # wide enough that greedy text is not one token repeated
    Qwen2ForCausalLM(config).save_pretrained(path)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, do_sample=True,
                     temperature=0.6, top_p=0.95).save_pretrained(path)
    return path


ROOT = Path(__file__).resolve().parents[1]
QWEN = ROOT / "recipes" / "configs" / "qwen1.5b"
LAUNCH = ROOT / "launch" / "accelerate"
#: What a CPU smoke run must change, and nothing else: the model, one step, short generations, no bf16
#: (the accelerate files' `mixed_precision: bf16` is overridden on the launcher), a two-problem eval
#: with the HF backend (the vLLM eval path is covered by the eval CLI test below).
CPU = ["--max_steps", "1", "--max_completion_length", "32", "--bf16", "false", "--report_to", "none",
       "--eval_limit", "2", "--eval_max_new_tokens", "32", "--eval_backend", "hf"]


@pytest.fixture(scope="module")
def tiny_r1(tmp_path_factory, benchmarks_dir) -> Path:
    return build_tiny_r1(tmp_path_factory.mktemp("tiny_r1"), benchmarks_dir)


def launch(accelerate_file: str, recipe: str, config: Path, out: Path, *flags: str, processes: int = 1,
           timeout: int = 900) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file launch/accelerate/<file> recipes/<recipe> --config <config> ...``."""
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(LAUNCH / accelerate_file), "--num_processes",
           str(processes), "--mixed_precision", "no", "--main_process_port", "29617",
           str(ROOT / "recipes" / recipe), "--config", str(config), "--output_dir", str(out), *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false",
           "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    return proc


def test_tiny_model_has_an_r1_style_bpe_tokenizer(tiny_r1):
    from effreason.format import chat_prompt, prompt_opens_thinking, render_prompt
    from effreason.models import load_tokenizer

    tok = load_tokenizer(tiny_r1)
    text, ids = render_prompt(tok, chat_prompt("What is 2 + 3?"))
    assert text.endswith("<｜Assistant｜><think>\n") and prompt_opens_thinking(text)
    assert len(tok("</think>", add_special_tokens=False)["input_ids"]) == 1
    assert len(tok(" eighteen", add_special_tokens=False)["input_ids"]) > 1  # BPE pieces, not words
    assert tok.pad_token_id == tok.eos_token_id and ids[0] == tok.bos_token_id


@pytest.mark.parametrize("benchmark", ["gsm8k", "math500"])
def test_eval_cli_on_the_tiny_model(tiny_r1, benchmarks_dir, tmp_path, benchmark):
    from effreason.cli import main

    out = tmp_path / benchmark
    assert main(["eval", "--model", str(tiny_r1), "--benchmark", benchmark, "--data-dir", str(benchmarks_dir),
                 "--limit", "8", "--max-new-tokens", "24", "--no-progress", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["prompt"].endswith("<think>\n") for r in rows)
    for r in rows:  # the prompt opened <think>: text without </think> is cut-off thinking, not an answer
        if "</think>" not in r["completion"]:
            assert r["reason"] == "truncated" and r["thinking_tokens"] == r["tokens"], r
    assert json.loads((out / "results.json").read_text())["n"] == 8


@pytest.mark.slow
@pytest.mark.vllm
def test_eval_cli_vllm_backend_gives_the_hf_greedy_completions(tiny_r1, benchmarks_dir, tmp_path):
    pytest.importorskip("vllm")
    runs = {}
    for backend in ("hf", "vllm"):
        out = tmp_path / backend
        cmd = [sys.executable, "-m", "effreason.cli", "eval", "--model", str(tiny_r1), "--benchmark", "gsm8k",
               "--data-dir", str(benchmarks_dir), "--limit", "8", "--max-new-tokens", "24", "--backend", backend,
               "--no-progress", "--output", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"})
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs[backend] = {r["id"]: r["completion"] for r in map(json.loads, (out / "samples.jsonl").open())}
    assert runs["vllm"] == runs["hf"]


@pytest.mark.slow
@pytest.mark.vllm
def test_lgrpo_colocate_both_stages_with_deepspeed_zero2(tiny_r1, benchmarks_dir, tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "lgrpo"
    launch("zero2.yaml", "lgrpo.py", QWEN / "lgrpo_colocate.yaml", out, "--model_name_or_path", str(tiny_r1),
           "--data_dir", str(benchmarks_dir), *CPU)
    for stage in ("stage1", "stage2"):
        assert json.loads((out / stage / "training_done.json").read_text())["global_step"] == 1
        logged = [json.loads(line) for line in (out / stage / "train_log.jsonl").read_text().splitlines()]
        assert any("rewards/format/mean" in r for r in logged)
    rows = {r["run"]: r for r in json.loads((out / "comparison.json").read_text())}
    assert set(rows) == {"start", "stage1", "stage2"} and all(r["n"] == 2 for r in rows.values())


@pytest.mark.slow
@pytest.mark.vllm
def test_tldr_colocate_with_deepspeed_zero3(tiny_r1, benchmarks_dir, tmp_path):
    pytest.importorskip("vllm")
    out = tmp_path / "tldr"
    launch("zero3.yaml", "tldr.py", QWEN / "tldr.yaml", out, "--model_name_or_path", str(tiny_r1),
           "--data_dir", str(benchmarks_dir), *CPU)
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("rewards/tldr/mean" in r for r in logged)
    rows = {r["run"]: r for r in json.loads((out / "comparison.json").read_text())}
    assert set(rows) == {"start", "short", "medium", "long"}


def write_traces(path: Path, benchmarks: Path, num: int = 4) -> Path:
    """R1-style traces of GSM8K train problems: the worked solution as thinking, then a boxed answer."""
    rows = []
    with open(benchmarks / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        for _, line in zip(range(num), f, strict=False):
            row = json.loads(line)
            steps, _, gold = row["answer"].rpartition("####")
            gold = gold.strip().replace(",", "")
            thinking = "\n\n".join(steps.strip().splitlines() + [f"Wait, let me check: {gold}."])
            rows.append({"problem": row["question"], "answer": gold,
                         "completion": f"<think>\n{thinking}\n</think>\n\nThe answer is \\boxed{{{gold}}}."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_sft_lora_with_the_single_gpu_launch_file(tiny_r1, benchmarks_dir, tmp_path):
    out = tmp_path / "sft"
    traces = write_traces(tmp_path / "traces.jsonl", benchmarks_dir)
    launch("single_gpu.yaml", "sft.py", QWEN / "sft_lora.yaml", out, "--model_name_or_path", str(tiny_r1),
           "--prune_scorer", str(tiny_r1), "--traces", str(traces), "--data_dir", str(benchmarks_dir),
           *CPU[:2], *CPU[4:])  # no --max_completion_length: not an SFT setting
    for variant in ("unpruned", "pir", "random"):
        assert (out / variant / "adapter_config.json").is_file()  # LoRA, as the config asks
    pir = [json.loads(line) for line in (out / "data" / "pir.jsonl").read_text().splitlines()]
    assert any(step["pir"] is not None for row in pir for step in row["steps"])
    rows = {r["run"]: r for r in json.loads((out / "comparison.json").read_text())}
    assert set(rows) == {"start", "unpruned", "pir", "random"}
