"""Run by tests/test_vllm_sync.py in a subprocess (vLLM wants its own process).

Two GRPO steps with TRL colocate vLLM rollouts on the CPU, weight sync through
``install_cpu_colocate_sync``; then vLLM's greedy output must equal HF's greedy output of the
*trained* weights and differ from the initial ones. Prints ``RESULT: PASS`` or ``RESULT: FAIL``.
"""

import functools
import sys
import tempfile

import torch

NEW_TOKENS = 16


def hf_greedy(model, prompts):
    out = []
    with torch.no_grad():
        for ids in prompts:
            seq = torch.tensor([ids])
            for _ in range(NEW_TOKENS):
                seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
            out.append(seq[0, len(ids):].tolist())
    return out


def vllm_greedy(llm, prompts):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def main() -> int:
    import trl.generation.vllm_generation as trl_vllm_generation
    import vllm
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from effreason.lab.datasets import lab_dataset
    from effreason.lab.model import build_lab_model
    from effreason.lab.tokenizer import build_lab_tokenizer
    from effreason.training.vllm_sync import install_cpu_colocate_sync

    torch.set_num_threads(1)
    d = tempfile.mkdtemp(prefix="vllm_sync_")
    tok = build_lab_tokenizer()
    build_lab_model(tok).save_pretrained(d)
    tok.save_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    ds = lab_dataset("test", limit=4).select_columns(["prompt"])
    prompts = [tok.apply_chat_template(p, add_generation_prompt=True)["input_ids"] for p in ds["prompt"]]
    initial = hf_greedy(model.eval(), prompts)

    def distinct_words(completions, **kwargs):  # any reward that varies inside a group
        return [float(len(set(c[0]["content"].split()))) for c in completions]

    # TRL passes no dtype to LLM(); vLLM's "auto" would run the fp32 lab model in bf16 on CPU,
    # and token-exact comparison with HF needs the same precision.
    trl_vllm_generation.LLM = functools.partial(vllm.LLM, dtype="float32")
    cfg = GRPOConfig(
        output_dir=f"{d}/out", use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
        vllm_max_model_length=512, max_completion_length=NEW_TOKENS, num_generations=4,
        per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2, report_to=[], use_cpu=True,
        save_strategy="no", seed=0, bf16=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=distinct_words, args=cfg, train_dataset=ds,
                          processing_class=tok)
    print("installed:", install_cpu_colocate_sync(trainer))
    trainer.train()
    trainer.vllm_generation.sync_weights()
    trained = hf_greedy(trainer.model.eval(), prompts)
    synced = vllm_greedy(trainer.vllm_generation.llm, prompts)
    print("hf trained == hf initial:", trained == initial)
    print("vllm synced == hf trained:", synced == trained)
    ok = synced == trained and trained != initial
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
