"""Run by tests/test_adapters_vllm.py in a subprocess (vLLM wants its own process).

Two GRPO steps on a LoRA adapter (``build_grpo_trainer(train_adapter=...)``, the reasoning adapter's RL
stage) with TRL colocate vLLM rollouts on the CPU. Then: the base weights are bit-identical to the base
checkpoint on disk (the sync merges the adapter out of place), the LoRA weights moved, and vLLM's greedy
output equals HF's greedy output of base + trained adapter. Prints ``RESULT: PASS`` or ``RESULT: FAIL``.
"""

import sys
import tempfile
from pathlib import Path

import torch
from vllm_sync_check import (  # this folder is on sys.path (the script runs here)
    NEW_TOKENS,
    hf_greedy,
    vllm_greedy,
)


def main() -> int:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, ModelConfig

    from effreason.lab.datasets import lab_dataset
    from effreason.lab.model import build_lab_model
    from effreason.lab.tokenizer import build_lab_tokenizer
    from effreason.training.builders import build_grpo_trainer

    torch.set_num_threads(1)
    d = Path(tempfile.mkdtemp(prefix="vllm_lora_sync_"))
    tok = build_lab_tokenizer()
    build_lab_model(tok).save_pretrained(d / "base")
    tok.save_pretrained(d / "base")
    base_file = load_file(str(d / "base" / "model.safetensors"))
    start = get_peft_model(AutoModelForCausalLM.from_pretrained(d / "base", dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                      init_lora_weights=False))  # a non-zero adapter, as SFT leaves one
    start.save_pretrained(d / "sft")
    ds = lab_dataset("test", limit=4).select_columns(["prompt"])
    prompts = [tok.apply_chat_template(p, add_generation_prompt=True)["input_ids"] for p in ds["prompt"]]

    def distinct_words(completions, **kwargs):  # any reward that varies inside a group
        return [float(len(set(c[0]["content"].split()))) for c in completions]

    cfg = GRPOConfig(
        output_dir=str(d / "rl"), use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
        vllm_max_model_length=512, max_completion_length=NEW_TOKENS, num_generations=4,
        per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2, report_to=[], use_cpu=True,
        save_strategy="no", seed=0, bf16=False,
    )
    trainer = build_grpo_trainer(cfg, ModelConfig(model_name_or_path=str(d / "base"), dtype="float32"), ds,
                                 [distinct_words], [1.0], vllm_dtype="float32", train_adapter=str(d / "sft"))
    lora_before = {k: v.clone() for k, v in trainer.model.named_parameters() if "lora_" in k}
    trainer.train()
    trainer.vllm_generation.sync_weights()
    model = trainer.model
    base_now = {k.removeprefix("base_model.model.").replace(".base_layer", ""): v for k, v in model.named_parameters()
                if "lora_" not in k}
    base_same = all(torch.equal(base_now[k], v) for k, v in base_file.items() if k in base_now) \
        and len([k for k in base_file if k in base_now]) == len(base_file) - ("lm_head.weight" in base_file)
    lora_moved = any(not torch.equal(v, dict(model.named_parameters())[k]) for k, v in lora_before.items())
    trained = hf_greedy(model.eval(), prompts)
    synced = vllm_greedy(trainer.vllm_generation.llm, prompts)
    print("base weights bit-identical:", base_same)
    print("lora weights moved:", lora_moved)
    print("vllm synced == hf base + adapter:", synced == trained)
    ok = base_same and lora_moved and synced == trained
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
