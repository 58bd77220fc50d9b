"""Batched vs one-prompt-at-a-time HF generation on the lab test split: the speed-up of batching.

Both runs generate greedily from the same prompts with the same model through
``effreason.generation.hf.generate_hf``; only ``batch_size`` differs (64 vs 1). The script prints
both wall times, tokens/s, how many completions are identical, and the ratio. One run, no repeats.

Command used for the figure in the eval report (2 CPU cores, one thread)::

    OMP_NUM_THREADS=1 python eval/bench_batching.py --model lab --limit 256

``--limit`` keeps the one-at-a-time pass short (2,000 problems one by one take a long while on a CPU).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from effreason.format import render_prompt
from effreason.generation.hf import generate_hf
from effreason.lab.datasets import lab_dataset
from effreason.models import load_model_and_tokenizer


def timed_generate(model, tokenizer, prompt_ids, batch_size: int, max_new_tokens: int):
    start = time.perf_counter()
    gens = generate_hf(model, tokenizer, prompt_ids, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return gens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lab", help="model to time (default: the shipped lab model)")
    parser.add_argument("--split", default="test", help="lab split (default: test)")
    parser.add_argument("--limit", type=int, default=256, help="problems (default 256)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the batched pass")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny models are fastest on 1)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(args.model, device="cpu")
    rows = lab_dataset(args.split, limit=args.limit)
    prompt_ids = [render_prompt(tokenizer, row["prompt"])[1] for row in rows]

    generate_hf(model, tokenizer, prompt_ids[:2], max_new_tokens=8, batch_size=2)  # warm-up
    batched, t_batched = timed_generate(model, tokenizer, prompt_ids, args.batch_size, args.max_new_tokens)
    single, t_single = timed_generate(model, tokenizer, prompt_ids, 1, args.max_new_tokens)

    tokens = sum(g.num_tokens for g in single)
    same = sum(a.token_ids == b.token_ids for a, b in zip(batched, single, strict=True))
    figures = {
        "model": args.model, "split": args.split, "problems": len(prompt_ids), "threads": args.threads,
        "batch_size": args.batch_size, "batched_s": round(t_batched, 2), "one_at_a_time_s": round(t_single, 2),
        "batched_tokens_per_s": round(sum(g.num_tokens for g in batched) / t_batched, 1),
        "one_at_a_time_tokens_per_s": round(tokens / t_single, 1),
        "identical_completions": same, "speedup": round(t_single / t_batched, 2),
    }
    print(f"{len(prompt_ids)} lab {args.split} problems, {args.threads} thread(s), model {args.model}")
    print(f"batched (batch {args.batch_size}): {t_batched:.1f} s, {figures['batched_tokens_per_s']} tokens/s")
    print(f"one at a time:        {t_single:.1f} s, {figures['one_at_a_time_tokens_per_s']} tokens/s")
    print(f"identical completions: {same}/{len(prompt_ids)}")
    print(f"speed-up of batching: {figures['speedup']}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
