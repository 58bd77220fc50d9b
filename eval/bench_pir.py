"""PIR scoring speed: one forward pass per ablation vs packed batches vs shared-prefix KV reuse.

Every mode scores the same ablation sequences (``effreason.pruning.bench.time_pir_scoring``): the
full trace plus one sequence per functional step removed, scored on the gold answer's tokens.

- ``per_ablation``: one full forward pass per sequence (the reference);
- ``batched``: the same full sequences packed into padded batches (``--max-batch-tokens``);
- ``prefix``: the full trace once with a KV cache, then only the tokens after each removed step,
  packed into rows that attend to the cached shared prefix (what ``effreason prune`` uses).

The script prints the wall time of each mode, the speed-up over ``per_ablation``, the largest PIR
gap to it (the scores must agree to ~1e-4), and the token counts each approach runs (their ratio
bounds the speed-up of prefix reuse when compute dominates). One run per mode, no repeats.

Settings:

- ``--setting lab``: the shipped lab overthinker scoring verbose lab traces of train problems;
- ``--setting r1``: the hand-written R1-style traces (data/samples/r1_traces.jsonl), their thinking
  paragraphs repeated ``--repeat`` times to make long traces, scored by a randomly initialised
  Qwen3 (``--hidden-size``, ``--layers``) with a byte-level BPE tokenizer trained here on those
  traces: timing only (the scores of a random model mean nothing, but they must still agree);
- ``--scorer PATH --traces FILE``: your own model and traces (JSONL as for ``effreason prune``).

    OMP_NUM_THREADS=1 python eval/bench_pir.py --setting lab --traces-limit 64
    OMP_NUM_THREADS=1 python eval/bench_pir.py --setting r1 --repeat 4
    python eval/bench_pir.py --setting r1 --repeat 8 --hidden-size 1536 --layers 28 --device cuda   # a 1.5B-sized scorer

``--device cuda`` runs every mode on the GPU (timed to the last result read back); ``--dtype bfloat16``
for the dtype PIR scoring would use there (full passes and prefix reuse then agree to bf16 rounding,
not 1e-4: the tolerance printed is 1e-4 for float32 and 5e-2 for bfloat16).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from effreason.pruning import LabSegmenter, MarkerClassifier, ParagraphSegmenter, load_traces
from effreason.pruning.bench import scoring_work, time_pir_scoring

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "r1_traces.jsonl"


def lab_setting(limit: int, seed: int, device: str, dtype: torch.dtype):
    from effreason.lab.datasets import lab_problems
    from effreason.lab.traces import VERBOSE, write_trace
    from effreason.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("lab", device=device, dtype=dtype)
    rng = random.Random(seed)
    rows = [{"problem": p.text(), "completion": write_trace(p, VERBOSE, rng).text, "answer": str(p.answer)}
            for p in lab_problems("train")[:limit]]
    return model, tokenizer, rows, LabSegmenter()


def _repeat_thinking(completion: str, repeat: int) -> str:
    """The thinking paragraphs repeated ``repeat`` times (a longer trace with more functional steps)."""
    head, rest = completion.split("<think>", 1)
    thinking, answer = rest.split("</think>", 1)
    body = "\n\n".join([thinking.strip()] * repeat)
    return f"{head}<think>\n{body}\n</think>{answer}"


def r1_setting(repeat: int, hidden_size: int, layers: int, seed: int, device: str, dtype: torch.dtype):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    rows = [{**r, "completion": _repeat_thinking(r["completion"], repeat)} for r in load_traces(SAMPLES)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    bpe.train_from_iterator([r["problem"] + r["completion"] for r in rows],
                            trainers.BpeTrainer(vocab_size=1024, special_tokens=specials,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", unk_token="<unk>",
                                        eos_token="<|im_end|>")
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                               "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=hidden_size // 64,
                         num_key_value_heads=max(1, hidden_size // 128), head_dim=64, max_position_embeddings=8192,
                         pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa")
    with torch.device(device):  # initialised where it runs (a 7B-sized model takes minutes on the CPU)
        model = Qwen3ForCausalLM(config).to(dtype).eval()
    return model, tokenizer, rows, ParagraphSegmenter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=["lab", "r1"], default="lab")
    parser.add_argument("--scorer", help="your own scoring model (path or hub id); needs --traces")
    parser.add_argument("--traces", help="your own traces (JSONL as for `effreason prune`)")
    parser.add_argument("--segmenter", choices=["paragraph", "lab"], default="paragraph", help="for --traces")
    parser.add_argument("--traces-limit", type=int, default=64, help="lab traces (or first N of --traces)")
    parser.add_argument("--repeat", type=int, default=4, help="r1: thinking repeated this many times")
    parser.add_argument("--hidden-size", type=int, default=256, help="r1: random scorer width")
    parser.add_argument("--layers", type=int, default=4, help="r1: random scorer depth")
    parser.add_argument("--max-batch-tokens", type=int, default=16384)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.scorer or args.traces:
        if not (args.scorer and args.traces):
            parser.error("--scorer and --traces go together")
        from effreason.models import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(args.scorer, device=args.device, dtype=dtype)
        rows = load_traces(args.traces)[: args.traces_limit]
        segmenter = LabSegmenter() if args.segmenter == "lab" else ParagraphSegmenter()
        setting = f"{args.scorer} on {args.traces}"
    elif args.setting == "lab":
        model, tokenizer, rows, segmenter = lab_setting(args.traces_limit, args.seed, args.device, dtype)
        setting = "lab overthinker, verbose lab traces"
    else:
        model, tokenizer, rows, segmenter = r1_setting(args.repeat, args.hidden_size, args.layers, args.seed,
                                                        args.device, dtype)
        setting = f"random Qwen3 ({args.hidden_size}x{args.layers}), r1 samples x{args.repeat}"
    # warm-up, on the first trace with a functional step: it also runs the one-time check of the fast
    # scoring paths against the model's own forward (effreason.pruning.nll), which is not to be timed
    scored = next((r for r in rows if scoring_work(tokenizer, [r], segmenter, MarkerClassifier())), None)
    if scored is None:
        raise SystemExit("no trace has a functional step: nothing to score")
    time_pir_scoring(model, tokenizer, [scored], segmenter=segmenter)
    figures = time_pir_scoring(model, tokenizer, rows, segmenter=segmenter, max_batch_tokens=args.max_batch_tokens)
    device = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"cpu, {args.threads} threads"
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    figures = {"setting": setting, "device": device, "dtype": args.dtype,
               "parameters": sum(p.numel() for p in model.parameters()),
               **{k.removeprefix("bench/"): round(v, 8) if isinstance(v, float) else v for k, v in figures.items()}}
    figures["tokens_ratio"] = round(figures["tokens_full"] / figures["tokens_prefix"], 3)
    figures["tolerance"] = tolerance
    figures["agree"] = all(figures[f"max_abs_diff_{m}"] < tolerance for m in ("batched", "prefix"))
    print(json.dumps(figures, indent=2))
    print(f"per-ablation {figures['per_ablation_s']:.2f} s | batched {figures['batched_s']:.2f} s "
          f"({figures['speedup_batched']:.2f}x) | prefix reuse {figures['prefix_s']:.2f} s "
          f"({figures['speedup_prefix']:.2f}x; token ratio {figures['tokens_ratio']:.2f}) | scores agree to "
          f"{tolerance:g}: {figures['agree']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
