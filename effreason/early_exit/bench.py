"""``effreason eval exit-bench``: what online early exit saves in generation time, and what the probe costs.

One run, on one machine, on the same prompts, batch size and cap: after an untimed warm-up of both on
8 prompts, plain generation, generation with online exit (``effreason.early_exit.online``) and plain
generation again (the plain time is the mean of the two, so the order favours neither; on vLLM the
prompts are in the prefix cache for every timed call). It reports both wall times and their ratio, the tokens generated, and the probe's own time (HF: the stopping criterion's work per
step, cue scanning and MLP included; vLLM: the HF forward passes that give the features at cues, the
scanning and the MLP) as a share of the exit run's generation time. Timings from one run on a
shared machine are noisy: compare ratios within a run, not across runs.

    effreason eval exit-bench --model runs/early-exit-lab/start_model --limit 500 \\
        --exit-probe runs/early-exit-lab/probe --delta 0.05 --output runs/exit-bench.json
"""

from __future__ import annotations

import argparse
import json
import time

HELP = "benchmark: generation time with and without online early exit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the model the probe was built on (hub id, path, or lab)")
    p.add_argument("--benchmark", default="lab", help="problems to generate for (default: lab)")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", help="offline benchmark copies")
    p.add_argument("--limit", type=int, default=500, help="first N problems (default 500)")
    p.add_argument("--exit-probe", required=True, metavar="DIR", help="a probe folder from recipes/early_exit.py")
    p.add_argument("--delta", type=float, required=True, help="one of the probe's calibrated deltas")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    p.add_argument("--batch-size", type=int, default=64, help="HF sequences per generate call (default 64)")
    p.add_argument("--max-new-tokens", type=int, help="completion cap (default: the benchmark's)")
    p.add_argument("--instruction", help="text appended to each problem")
    p.add_argument("--output", help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from effreason.early_exit.method import METHOD
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.prompts import load_problems
    from effreason.generation.backends import Sampling, build_backend
    from effreason.generation.methods import sampler
    from effreason.jsonl import write_json
    from effreason.models import load_tokenizer

    cfg = EvalConfig(output="-", benchmark=args.benchmark, split=args.split, data_dir=args.data_dir, limit=args.limit,
                     model=args.model, instruction=args.instruction, max_new_tokens=args.max_new_tokens,
                     backend=args.backend)
    settings = {"probe": args.exit_probe, "delta": args.delta}
    METHOD.check_settings(settings, samples=1)
    task = load_problems(cfg, load_tokenizer(args.model))
    prompts = [p.prompt_ids for p in task.problems]
    seeds = [0] * len(prompts)
    room = len(METHOD.exit_ids(settings, load_tokenizer(args.model))) + METHOD.answer_room(settings) + 16
    backend = build_backend(args.backend, args.model, sampling=Sampling(), batch_size=args.batch_size,
                            max_model_len=max(map(len, prompts)) + cfg.max_new_tokens + room)
    try:
        sample = sampler(backend, {"early_exit": settings})  # loads the probe (and vLLM's HF copy) before timing
        warm = prompts[: min(8, len(prompts))]  # first calls pay one-off costs (allocations, kernels): untimed
        backend.generate(warm, n=1, max_new_tokens=cfg.max_new_tokens, seeds=seeds[: len(warm)])
        sample(warm, 1, cfg.max_new_tokens, seeds[: len(warm)])
        sample.timing.clear()
        plain_s = []
        for order in ("plain", "exit", "plain"):  # plain before and after: the order favours neither
            tic = time.perf_counter()
            if order == "plain":
                plain = backend.generate(prompts, n=1, max_new_tokens=cfg.max_new_tokens, seeds=seeds)
                plain_s.append(time.perf_counter() - tic)
            else:
                out = sample(prompts, 1, cfg.max_new_tokens, seeds)
                exit_s = time.perf_counter() - tic
    finally:
        backend.close()
    timing = sample.timing
    plain_tokens = sum(g[0].num_tokens for g in plain)
    exit_tokens = sum(row[0][0].num_tokens for row in out)
    generated = sum(row[0][2] for row in out)
    exits = sum(row[0][1]["early_exit"]["exited"] for row in out)
    figures = {"backend": args.backend, "problems": len(prompts), "delta": args.delta,
               "plain_s": sum(plain_s) / 2, "plain_runs_s": plain_s, "exit_s": exit_s,
               "wall_ratio": exit_s / (sum(plain_s) / 2), "plain_tokens": plain_tokens,
               "exit_tokens": exit_tokens, "exit_generated_tokens": generated, "token_ratio": exit_tokens / plain_tokens,
               "exits": exits, "probe_s": timing.get("probe_s"), "answer_s": timing.get("answer_s"),
               "probe_share": timing["probe_s"] / exit_s if timing.get("probe_s") is not None else None}
    print(json.dumps(figures, indent=2))
    if args.output:
        write_json(args.output, figures)
    return 0
