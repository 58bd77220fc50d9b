"""Steering vectors for concise reasoning (ASC, arXiv 2507.04742; Efficiency Steering, arXiv 2506.15647).

Training-free: one direction from a few dozen concise/verbose pairs, added to the residual stream at
generation time with a strength whose next-token KL is bounded.

1. pairs: ``pairs: lab`` (decision pairs from the lab verbose writer: a trace cut right before and right after one check),
   ``jsonl`` (your ``{problem, concise, verbose}`` rows, ASC) or ``self`` (the model's shortest vs longest
   correct sample per problem, Efficiency Steering); see ``effreason.steering.pairs``;
2. direction at every candidate layer: ``v_l = mean(concise state - verbose state)`` (``position``: the last
   token, or the mean over the completion), read where it will be injected;
3. strength per layer and sign, on held-out prompts continued with the model's own greedy completion:
   ASC's closed form (``a`` = median ||Jv||, ``L`` = p95 curvature, ``KL <= eps``) and the measured
   per-token KL at it, and the largest strength whose measured p95 KL is within ``eps``
   (``gamma_rule``: which one is written);
4. layer and sign sweep on dev problems (greedy, HF): the pair with the fewest tokens among those whose
   accuracy is within ``accuracy_tolerance`` of the unsteered model's (tokens must drop: the sign is checked;
   its gamma stepped down when it costs more accuracy than that; no candidate that lowers the tokens is an
   error, the sweep kept in ``sweep.json``). Steps 2-4 run on an HF copy in ``measure_dtype`` (float32);
5. ``<output_dir>/steering/``: the vector (safetensors) + JSON (layer, position rule, gamma, eps, sign,
   measured KL, closed form, sweep, model and tokenizer fingerprints);
6. the eval suite without steering, at the chosen strength and at ``eval_gammas``, and on
   ``transfer_benchmark``: ``comparison.md`` / ``.json`` / ``.png`` and ``summary.json``.

Re-running with the same settings reuses the vector and resumes the evaluations; ``steering_config.json``
refuses other settings in the same output_dir.

    accelerate launch recipes/steering.py                                   # the lab default (CPU)
    accelerate launch recipes/steering.py --config recipes/configs/qwen1.5b/steering.yaml
    effreason eval --model lab --benchmark lab --steering runs/steering-lab/steering --output OUT
"""

import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lab" / "steering.yaml"
RECIPE = "recipes/steering.py"
logger = logging.getLogger("recipes.steering")


def main(argv: list[str] | None = None) -> int:
    from effreason.errors import UserError
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.posttrain import write_comparison
    from effreason.evaluation.prompts import load_problems
    from effreason.grading import Grader
    from effreason.hidden import model_shape, resolve_layers
    from effreason.jsonl import atomic_directory, read_jsonl, write_json, write_jsonl
    from effreason.models import (
        load_model_and_tokenizer,
        load_tokenizer,
        resolve_model_path,
    )
    from effreason.outputs import pin_settings, weights_fingerprint
    from effreason.steering import pairs as pair_sources
    from effreason.steering.args import parse_steering_args
    from effreason.steering.extract import directions
    from effreason.steering.vector import SteeringVector, model_record
    from effreason.training.launch import main_process_output

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, eval_args = parse_steering_args(sys.argv[1:] if argv is None else argv, DEFAULT_CONFIG)
    root = main_process_output(args.model_name_or_path, args.output_dir, RECIPE)
    if root is None:  # one process does the work: a few forward passes and greedy dev runs
        return 0
    clock, seconds = time.perf_counter(), {}
    model_path = resolve_model_path(args.model_name_or_path)
    settings = {**args.settings(), "model_files": weights_fingerprint(model_path),
                "pairs_file_sha256": weights_fingerprint(args.pairs_file) if args.pairs_file else None}
    saved_path = root / "steering_config.json"
    vector_dir = root / "steering"
    if (vector_dir / "steering.json").is_file() and not saved_path.is_file():
        raise UserError(f"{vector_dir} holds a vector but {saved_path} is missing, so the settings it was made with "
                        "cannot be checked; use another output_dir")
    pin_settings(saved_path, settings, {"recipe": asdict(args), "eval": asdict(eval_args)}, work="its vector")

    if (vector_dir / "steering.json").is_file():
        logger.info("reusing the vector in %s (made with these settings)", vector_dir)
    else:
        depth = model_shape(model_path)[0]
        layers = sorted({resolve_layers([x], depth)[0] for x in args.layers})  # fractions may meet on a shallow model
        tokenizer = load_tokenizer(model_path)

        # ---- 1. pairs (before the HF model loads: pairs=self runs its own engine)
        tic = time.perf_counter()
        pairs, pair_info = _pairs(args, model_path, tokenizer, pair_sources)
        if not pairs:
            raise UserError(f"pairs={args.pairs}: no pairs (see the log); the direction needs at least one")
        write_jsonl(root / "pairs.jsonl", [{"id": p.id, "prompt_ids": list(p.prompt_ids), "concise_ids": list(p.concise_ids),
                                            "verbose_ids": list(p.verbose_ids)} for p in pairs])
        seconds["pairs"] = time.perf_counter() - tic

        # ---- 2. directions, read by an HF copy in measure_dtype (float32: derivatives and small KLs need it)
        tic = time.perf_counter()
        model, tokenizer = load_model_and_tokenizer(model_path, dtype=args.measure_dtype)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        hidden = model.config.hidden_size
        vectors = directions(model, pairs, layers, position=args.position, max_batch_tokens=args.max_batch_tokens,
                             pad_id=pad)
        seconds["directions"] = time.perf_counter() - tic

        # ---- 3-4. strength and sweep on held-out problems
        tic = time.perf_counter()
        dev_cfg = EvalConfig(output=str(root / "dev"), benchmark=args.dev_benchmark, split=args.dev_split,
                             data_dir=args.data_dir, limit=args.kl_problems + args.sweep_problems,
                             model=args.model_name_or_path, instruction=args.instruction,
                             max_new_tokens=args.dev_max_new_tokens)
        task = load_problems(dev_cfg, tokenizer)
        if len(task.problems) <= args.kl_problems:
            raise UserError(f"dev_benchmark {args.dev_benchmark} ({args.dev_split}) has {len(task.problems)} problems: "
                            f"need more than kl_problems={args.kl_problems} (the rest are the sweep's)")
        kl_set, sweep_set = task.problems[: args.kl_problems], task.problems[args.kl_problems :]
        with Grader(mode=task.grading, last_number_fallback=task.last_number_fallback) as grader:
            choice = _choose(args, model, tokenizer, vectors, kl_set, sweep_set, grader, dev_cfg.max_new_tokens, pad)
        seconds["strength_and_sweep"] = time.perf_counter() - tic

        # ---- 5. artifact
        best = choice["chosen"]
        vec = SteeringVector(vectors[best["layer"]], best["layer"], best["gamma"], best["sign"], args.position,
                             model=model_record(args.model_name_or_path, model_path, tokenizer, num_layers=depth,
                                                hidden_size=hidden),
                             info={"eps": args.eps, "gamma_rule": args.gamma_rule, "kl": best["kl"],
                                   "kl_check": best["kl_check"],
                                   "closed_form": best["closed_form"], "measured": best["measured"],
                                   "bound_gamma": best["bound_gamma"], "backoff": best["backoff"],
                                   "dev": best["dev"],
                                   "lowered_tokens": choice["lowered_tokens"],
                                   "sweep": {"unsteered": choice["unsteered"], "candidates": choice["candidates"],
                                             "problems": len(sweep_set), "accuracy_tolerance": args.accuracy_tolerance},
                                   "kl_prompts": {"benchmark": args.dev_benchmark, "split": args.dev_split,
                                                  "problems": len(kl_set)},
                                   "pairs": pair_info})
        with atomic_directory(vector_dir, replace=vector_dir.exists()) as tmp:
            vec.save(tmp)
        del model
        _free_accelerator_memory()  # the eval's vLLM engines check free memory when they start
    vec = SteeringVector.load(vector_dir)
    _print_choice(vec)

    # ---- 6. the eval suite
    runs, transfer = {}, {}
    if eval_args.eval_benchmark:
        tic = time.perf_counter()
        runs = _evaluate(eval_args, root, args, vector_dir, vec, eval_args.eval_benchmark, "")
        print(write_comparison(root, runs, "unsteered", f"Steering vector (layer {vec.layer}) on "
                                                        f"{eval_args.eval_benchmark}"))
        seconds["eval"] = time.perf_counter() - tic
    if args.transfer_benchmark:
        tic = time.perf_counter()
        transfer = _evaluate(replace(eval_args, eval_split="test"), root, args, vector_dir, vec, args.transfer_benchmark,
                             f"{args.transfer_benchmark}-", gammas=[])
        write_comparison(root / "transfer", transfer, "unsteered",
                         f"Steering vector from {args.dev_benchmark} pairs, applied to {args.transfer_benchmark}")
        seconds["transfer"] = time.perf_counter() - tic
    seconds["total"] = time.perf_counter() - clock
    keys = ("accuracy", "n", "tokens_mean", "tokens_median", "tokens_p90", "wall_time_s", "throughput")
    summary = {"seconds": seconds, "vector": {"layer": vec.layer, "gamma": vec.gamma, "sign": vec.sign,
                                              "eps": vec.info.get("eps"), "kl": vec.info.get("kl"),
                                              "kl_check": vec.info.get("kl_check"), "dev": vec.info.get("dev"),
                                              "closed_form": vec.info.get("closed_form")},
               "pairs": len(read_jsonl(root / "pairs.jsonl")) if (root / "pairs.jsonl").is_file() else None,
               "eval": {k: {f: v.get(f) for f in keys} for k, v in runs.items()},
               "transfer": {k: {f: v.get(f) for f in keys} for k, v in transfer.items()}}
    write_json(root / "summary.json", summary)
    print(f"\nsteering vector in {vector_dir}; wall time {seconds['total']:.0f} s")
    return 0


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _pairs(args, model_path, tokenizer, sources):
    """The concise/verbose pairs of ``args.pairs`` and what they came from."""
    if args.pairs == "lab":
        pairs = sources.lab_pairs(tokenizer, args.num_pairs, args.seed)
        return pairs, {"source": "lab", "pairs": len(pairs), "cut": "after the same step"}
    if args.pairs == "jsonl":
        pairs = sources.read_pairs_jsonl(args.pairs_file, tokenizer, instruction=args.instruction, limit=args.num_pairs)
        return pairs, {"source": "jsonl", "file": str(args.pairs_file), "pairs": len(pairs)}
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.prompts import load_problems
    from effreason.generation.backends import Sampling, build_backend
    from effreason.grading import Grader

    cfg = EvalConfig(output="-", benchmark=args.pair_benchmark, split=args.pair_split, data_dir=args.data_dir,
                     limit=args.pair_problems, model=args.model_name_or_path, instruction=args.instruction,
                     max_new_tokens=args.pair_max_new_tokens)
    task = load_problems(cfg, tokenizer)
    longest = max(len(p.prompt_ids) for p in task.problems)
    backend = build_backend(args.backend, model_path, sampling=Sampling(args.pair_temperature, 1.0, args.seed),
                            dtype=args.dtype, batch_size=args.batch_size,
                            max_model_len=longest + cfg.max_new_tokens + 16)
    try:
        with Grader(mode=task.grading, last_number_fallback=task.last_number_fallback) as grader:
            pairs, counts = sources.self_pairs(backend, grader, task.problems, samples=args.pair_samples,
                                               max_new_tokens=cfg.max_new_tokens, seed=args.seed)
    finally:
        backend.close()
        del backend
        _free_accelerator_memory()
    pairs = pairs[: args.num_pairs]
    return pairs, {"source": "self", "benchmark": args.pair_benchmark, "split": args.pair_split, **counts,
                   "pairs": len(pairs)}


def _generate(model, tokenizer, prompts, max_new_tokens, batch_size, vector=None, layer=None, gamma=0.0):
    from effreason.generation.hf import generate_hf
    from effreason.steering.inject import SteeredModel

    steered = model if vector is None or gamma == 0 else SteeredModel(model, vector, layer, gamma)
    return generate_hf(steered, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)


def _dev_figures(gens, problems, grader) -> dict:
    correct = [grader.grade(g.text, p.answer).correct for g, p in zip(gens, problems, strict=True)]
    return {"accuracy": sum(correct) / len(correct), "tokens_mean": sum(g.num_tokens for g in gens) / len(gens)}


def _choose(args, model, tokenizer, vectors, kl_set, sweep_set, grader, max_new_tokens, pad) -> dict:
    """Strength per layer and sign (closed form and measured), then the dev sweep; the chosen candidate."""
    from effreason.errors import UserError
    from effreason.jsonl import write_json
    from effreason.steering.strength import (
        closed_form_gamma,
        derivative_stats,
        kl_stats,
        kl_values,
        search_gamma,
    )

    kl_prompts = [list(p.prompt_ids) for p in kl_set]
    gens = _generate(model, tokenizer, kl_prompts, max_new_tokens, args.batch_size)
    sequences = [p + g.token_ids for p, g in zip(kl_prompts, gens, strict=True)]
    starts = [len(p) - 1 for p in kl_prompts]
    sweep_prompts = [list(p.prompt_ids) for p in sweep_set]
    sweep_gens = _generate(model, tokenizer, sweep_prompts, max_new_tokens, args.batch_size)
    unsteered = _dev_figures(sweep_gens, sweep_set, grader)
    logger.info("dev sweep: unsteered accuracy %.3f, tokens %.1f", unsteered["accuracy"], unsteered["tokens_mean"])
    measure = {"max_batch_tokens": args.max_batch_tokens, "pad_id": pad}
    candidates = []
    for layer, v in vectors.items():
        d = derivative_stats(model, sequences, starts, v, layer, step=args.fd_step, **measure)
        if not d["a"] > 0:  # e.g. layer 0 with pairs that end in the same token: the direction is 0 there
            logger.warning("layer %d: its direction does not move the logits (median ||Jv|| = %g): skipped", layer,
                           d["a"])
            continue
        cf = closed_form_gamma(d["a"], d["L"], args.eps)
        for sign in (1, -1):
            sv = sign * v
            cf_kl = kl_stats(kl_values(model, sequences, starts, sv, layer, cf["gamma"], **measure))
            start = cf["gamma"] if cf["gamma"] > 0 else 2 * args.eps**0.5 / d["a"]
            gamma_m, tried = search_gamma(
                lambda g, sv=sv, layer=layer: kl_stats(kl_values(model, sequences, starts, sv, layer, g, **measure))["p95"],
                args.eps, start)
            gamma = cf["gamma"] if args.gamma_rule == "closed_form" else gamma_m
            kl = kl_stats(kl_values(model, sequences, starts, sv, layer, gamma, **measure)) if gamma > 0 else None
            dev = _dev_figures(_generate(model, tokenizer, sweep_prompts, max_new_tokens, args.batch_size, v, layer,
                                         sign * gamma), sweep_set, grader)
            candidates.append({"layer": layer, "sign": sign, "gamma": sign * gamma, "vector_norm": float(v.norm()),
                               "closed_form": {**d, **cf, "eps": args.eps, "kl": cf_kl,
                                               "p95_over_eps": cf_kl["p95"] / args.eps},
                               "measured": {"gamma": gamma_m, "tried": tried}, "kl": kl, "dev": dev})
            logger.info("layer %d sign %+d: gamma %.4g (closed form %.4g, its p95 KL %.3g = %.3g x eps); dev accuracy "
                        "%.3f, tokens %.1f", layer, sign, gamma, cf["gamma"], cf_kl["p95"], cf_kl["p95"] / args.eps,
                        dev["accuracy"], dev["tokens_mean"])
    if not candidates:
        raise UserError("no candidate layer's direction moves the logits (see the log): the concise and verbose members "
                        "of the pairs end in the same state; check the pairs, or try other layers or position: mean")
    floor = unsteered["accuracy"] - args.accuracy_tolerance - 1e-12
    ok = [c for c in candidates if c["dev"]["accuracy"] >= floor and c["gamma"] != 0]
    if ok:
        chosen = min(ok, key=lambda c: c["dev"]["tokens_mean"])
    else:  # every strength costs accuracy: the most accurate candidate, backed off below
        chosen = max(candidates, key=lambda c: (c["dev"]["accuracy"], -c["dev"]["tokens_mean"]))
    chosen = dict(chosen, bound_gamma=chosen["gamma"], backoff=[])
    while chosen["dev"]["accuracy"] < floor and len(chosen["backoff"]) < args.backoff_steps:
        # the bound is a ceiling: step down until the dev accuracy is within the tolerance
        layer, sign, v = chosen["layer"], chosen["sign"], vectors[chosen["layer"]]
        gamma = chosen["gamma"] * args.backoff_factor
        dev = _dev_figures(_generate(model, tokenizer, sweep_prompts, max_new_tokens, args.batch_size, v, layer, gamma),
                           sweep_set, grader)
        chosen["backoff"].append({"gamma": gamma, "dev": dev})
        chosen.update(gamma=gamma, dev=dev,
                      kl=kl_stats(kl_values(model, sequences, starts, sign * v, layer, abs(gamma), **measure)))
        logger.info("layer %d: dev accuracy below %.3f, backed off to gamma %.4g: accuracy %.3f, tokens %.1f",
                    layer, floor, gamma, dev["accuracy"], dev["tokens_mean"])
    # the KL at the chosen strength on prompts the search never saw: the sweep's, with their unsteered completions
    check = ([p + g.token_ids for p, g in zip(sweep_prompts, sweep_gens, strict=True)], [len(p) - 1 for p in sweep_prompts])
    sv = chosen["sign"] * vectors[chosen["layer"]]
    chosen["kl_check"] = kl_stats(kl_values(model, *check, sv, chosen["layer"], abs(chosen["gamma"]), **measure))
    logger.info("chosen: layer %d, gamma %.4g: p95 KL %.3g on the search's prompts, %.3g on %d other held-out prompts "
                "(eps %g)", chosen["layer"], chosen["gamma"], chosen["kl"]["p95"] if chosen["kl"] else float("nan"),
                chosen["kl_check"]["p95"], len(sweep_prompts), args.eps)
    lowered = chosen["dev"]["accuracy"] >= floor and chosen["dev"]["tokens_mean"] < unsteered["tokens_mean"]
    if not lowered:
        sweep = Path(args.output_dir) / "sweep.json"
        write_json(sweep, {"unsteered": unsteered, "candidates": candidates, "chosen": chosen})
        what = (f"no layer and sign lowered the dev tokens at accuracy >= {floor:.3f} within eps={args.eps:g} "
                f"(the sweep: {sweep})")
        if args.require_effect:
            raise UserError(f"{what}; try other pairs, layers, position or a larger eps (require_effect: false writes "
                            "the vector anyway)")
        logger.warning("%s: the vector written (layer %d) has no measured effect", what, chosen["layer"])
    return {"chosen": chosen, "candidates": candidates, "unsteered": unsteered, "lowered_tokens": lowered}


def _print_choice(vec) -> None:
    kl, cf = vec.info.get("kl") or {}, vec.info.get("closed_form") or {}
    print(f"layer {vec.layer}, sign {vec.sign:+d}, gamma {vec.gamma:.4g} ({vec.info.get('gamma_rule')}), eps "
          f"{vec.info.get('eps')}: measured KL median {kl.get('median', float('nan')):.3g}, p95 "
          f"{kl.get('p95', float('nan')):.3g} (on other held-out prompts: p95 "
          f"{(vec.info.get('kl_check') or {}).get('p95', float('nan')):.3g}); closed form gamma {cf.get('gamma', float('nan')):.4g} (its p95 KL "
          f"{cf.get('p95_over_eps', float('nan')):.3g} x eps)")
    if vec.info.get("backoff"):
        print(f"  backed off from {vec.info['bound_gamma']:.4g} (the bound's) for dev accuracy: "
              + ", ".join(f"{b['gamma']:.4g} -> {b['dev']['accuracy']:.3f}" for b in vec.info["backoff"]))
    for c in vec.info.get("sweep", {}).get("candidates", []):
        print(f"  sweep layer {c['layer']} sign {c['sign']:+d} gamma {c['gamma']:.4g}: accuracy {c['dev']['accuracy']:.3f}, "
              f"tokens {c['dev']['tokens_mean']:.1f}")


def _evaluate(eval_args, root, args, vector_dir, vec, benchmark, prefix, gammas=None):
    """The model without steering, at the vector's gamma and at each of ``eval_gammas``: runs under ``root/eval``."""
    from effreason.evaluation.posttrain import evaluate_model

    base = replace(eval_args, eval_benchmark=benchmark)
    runs = {"unsteered": evaluate_model(base, root, f"{prefix}unsteered", args.model_name_or_path,
                                        instruction=args.instruction, data_dir=args.data_dir)}
    grid = [vec.gamma] + [g for g in (args.eval_gammas if gammas is None else gammas) if g != vec.gamma]
    labels = [f"{g:.6g}" for g in grid]
    if len(set(labels)) != len(labels):
        raise ValueError(f"eval_gammas {grid} name the same strength twice to 6 digits; give distinct strengths")
    for gamma, label in zip(grid, labels, strict=True):
        name = f"gamma_{label}" + (" (chosen)" if gamma == vec.gamma else "")
        folder = f"{prefix}gamma_{label}"
        methods = {**base.eval_methods, "steering": {"vector": str(vector_dir), "gamma": gamma}}
        runs[name] = evaluate_model(replace(base, eval_methods=methods), root, folder, args.model_name_or_path,
                                    instruction=args.instruction, data_dir=args.data_dir)
    return runs


if __name__ == "__main__":
    from effreason.errors import run_script

    sys.exit(run_script(main, RECIPE))
