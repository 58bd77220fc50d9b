"""``effreason eval steer-bench``: what steering costs per generated token, and what it saves in generation time.

One run, on one machine, on the same prompts, batch size and cap, greedy:

- cost: every prompt generates exactly ``--fixed-tokens`` tokens (end of sequence suppressed), plain and
  steered, so the two runs do the same work but for the vector's addition; ``cost`` is the fastest
  steered run's time over the fastest plain run's, minus one (the least disturbed runs, as ``timeit``
  takes; ``cost_of_medians`` beside it). On a machine whose runs vary by more than the cost, HF also
  reports the hook's own time (``hook_s``, timed inside it over the steered fixed-length runs) as a share
  of those runs' time (``hook_share``): what steering adds, without the run-to-run noise;
- saving: plain and steered generation as users run it (stopping at the end of sequence); ``wall_ratio``
  is the steered time over the plain time, beside the token ratio.

HF alternates plain and steered ``--repeats`` times each (plain first, then steered, and so on), after an
untimed warm-up of both; vLLM's steered model is fixed per engine, so the plain engine runs its
``--repeats`` first, then the steered one, each after an untimed warm-up; both run with the steered engine's settings (eager, no
prefix caching, no chunked prefill), so they differ by the model only. Each figure is the median of its
repeats (all of them are in the output). Timings of one run on a shared machine are noisy: compare
ratios within a run, not across runs.

    effreason eval steer-bench --model lab --steering runs/steering-lab/steering --limit 500 --output bench.json
"""

from __future__ import annotations

import argparse
import json
import time

HELP = "benchmark: generation time with and without a steering vector"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="the model the vector was extracted from (hub id, path, or lab)")
    p.add_argument("--steering", required=True, metavar="DIR", help="a steering folder from recipes/steering.py")
    p.add_argument("--gamma", type=float, help="strength (default: the vector's)")
    p.add_argument("--benchmark", default="lab", help="problems to generate for (default: lab)")
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", help="offline benchmark copies")
    p.add_argument("--limit", type=int, default=500, help="first N problems (default 500)")
    p.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    p.add_argument("--batch-size", type=int, default=64, help="HF sequences per generate call (default 64)")
    p.add_argument("--max-new-tokens", type=int, help="completion cap of the saving runs (default: the benchmark's)")
    p.add_argument("--fixed-tokens", type=int, default=128, help="tokens every prompt generates in the cost runs")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each kind (default 3; medians reported)")
    p.add_argument("--instruction", help="text appended to each problem")
    p.add_argument("--output", help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.prompts import load_problems
    from effreason.jsonl import write_json
    from effreason.models import load_tokenizer, resolve_model_path
    from effreason.steering.method import METHOD

    if args.repeats < 1 or args.fixed_tokens < 1:
        raise ValueError("--repeats and --fixed-tokens must be >= 1")
    settings = {"vector": args.steering, **({"gamma": args.gamma} if args.gamma is not None else {})}
    METHOD.check_settings(settings, samples=1)
    tokenizer = load_tokenizer(args.model)
    METHOD.check_model_source(settings, args.model, None, tokenizer)
    settings = METHOD.resolve_settings(settings)
    cfg = EvalConfig(output="-", benchmark=args.benchmark, split=args.split, data_dir=args.data_dir, limit=args.limit,
                     model=args.model, instruction=args.instruction, max_new_tokens=args.max_new_tokens,
                     backend=args.backend)
    prompts = [p.prompt_ids for p in load_problems(cfg, tokenizer).problems]
    cap = max(cfg.max_new_tokens, args.fixed_tokens)
    if args.backend == "hf":
        times, tokens = _hf(args, resolve_model_path(args.model), tokenizer, prompts, settings, cfg.max_new_tokens)
    else:
        times, tokens = _vllm(args, resolve_model_path(args.model), prompts, settings, cfg.max_new_tokens,
                              max(map(len, prompts)) + cap + 16)
    figures = {"backend": args.backend, "problems": len(prompts), "gamma": settings["gamma"],
               "fixed_tokens": args.fixed_tokens, **times,
               "cost": times["steered_fixed_min_s"] / times["plain_fixed_min_s"] - 1,
               "cost_of_medians": times["steered_fixed_s"] / times["plain_fixed_s"] - 1,
               "wall_ratio": times["steered_s"] / times["plain_s"], **tokens,
               "token_ratio": tokens["steered_tokens"] / tokens["plain_tokens"]}
    print(json.dumps(figures, indent=2))
    if args.output:
        write_json(args.output, figures)
    return 0


def _hf(args, model_path, tokenizer, prompts, settings, max_new_tokens):
    import torch

    from effreason.generation.hf import generate_hf
    from effreason.generation.methods import GenerationHooks
    from effreason.models import load_model_and_tokenizer
    from effreason.steering.method import METHOD

    model, _ = load_model_and_tokenizer(model_path)
    steered = METHOD.apply(GenerationHooks(model=model), tokenizer, settings).model

    def fixed(m, batch):
        pad = tokenizer.pad_token_id
        for start in range(0, len(batch), args.batch_size):
            rows = batch[start : start + args.batch_size]
            width = max(map(len, rows))
            ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            with torch.inference_mode():
                m.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), do_sample=False,
                           max_new_tokens=args.fixed_tokens, min_new_tokens=args.fixed_tokens, pad_token_id=pad)

    def natural(m, batch):
        return generate_hf(m, tokenizer, batch, max_new_tokens=max_new_tokens, batch_size=args.batch_size)

    warm = prompts[: min(8, len(prompts))]
    for m in (model, steered):  # first calls pay one-off costs: untimed
        fixed(m, warm)
        natural(m, warm)
    runs: dict[str, list[float]] = {"plain_fixed_s": [], "steered_fixed_s": [], "plain_s": [], "steered_s": []}
    out = {}
    for kind, run_one in (("_fixed_s", fixed), ("_s", natural)):
        steered.timing = {} if kind == "_fixed_s" else None
        for _ in range(args.repeats):
            for name, m in (("plain", model), ("steered", steered)):
                tic = time.perf_counter()
                gens = run_one(m, prompts)
                runs[name + kind].append(time.perf_counter() - tic)
                if gens is not None:
                    out[name] = sum(g.num_tokens for g in gens)
        if kind == "_fixed_s":
            hook_s = steered.timing["hook_s"]
    times = _medians(runs)
    times.update(hook_s=hook_s, hook_share=hook_s / sum(runs["steered_fixed_s"]))
    return times, {"plain_tokens": out["plain"], "steered_tokens": out["steered"]}


def _medians(runs: dict[str, list[float]]) -> dict:
    import statistics

    return {**{k: statistics.median(v) for k, v in runs.items()},
            **{k.replace("_s", "_min_s"): min(v) for k, v in runs.items() if k.endswith("fixed_s")}, "runs_s": runs}


def _vllm(args, model_path, prompts, settings, max_new_tokens, max_model_len):
    from effreason.generation import vllm as vllm_gen
    from effreason.steering.method import METHOD

    vllm = vllm_gen.import_vllm()
    from vllm.inputs import TokensPrompt

    requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts]
    fixed = vllm.SamplingParams(temperature=0.0, max_tokens=args.fixed_tokens, ignore_eos=True)
    natural = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    runs: dict[str, list[float]] = {}
    tokens = {}
    steered = METHOD.vllm_engine(settings, model_path)
    plain = {k: v for k, v in steered.items() if k != "hf_overrides"}  # the same engine settings, the stock model
    for name, extra in (("plain", plain), ("steered", steered)):
        llm = vllm_gen.load_vllm(model_path, max_model_len=max_model_len, **extra)
        try:
            llm.generate(requests[:8], fixed, use_tqdm=False)  # untimed warm-up
            for kind, params in (("_fixed_s", fixed), ("_s", natural)):
                for _ in range(args.repeats):
                    tic = time.perf_counter()
                    outs = llm.generate(requests, params, use_tqdm=False)
                    runs.setdefault(name + kind, []).append(time.perf_counter() - tic)
            tokens[f"{name}_tokens"] = sum(len(o.outputs[0].token_ids) for o in outs)
        finally:
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
    return _medians(runs), tokens
