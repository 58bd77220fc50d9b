"""Early-exit probes with conformal calibration (LYNX, arXiv 2512.05325): train, calibrate, evaluate, ship.

A user runs this on their reasoning model and gets a small probe that stops the thinking at a cue
("wait", "hmm", "alternatively") when the model already has the answer, with a chosen bound delta on
how often such a stop is wrong (per cue event; see ``effreason.early_exit.conformal``):

1. rollouts: ``samples_per_problem`` traces of ``num_problems`` training problems (HF or vLLM), token ids kept;
2. cue events on word boundaries in the thinking, each labelled by cutting before the cue, forcing
   ``</think>`` + the answer lead-in and grading the greedy answer alone with the shared grader;
3. features: hidden states of a few layers at each event's token, one forward pass per trace;
4. probe: standardised MLP (256, 64) with class-balanced loss, early stopping on a validation split by problem;
5. calibration: class-conditional split conformal on held-out problems, thresholds for every delta in ``deltas``;
6. ``<output_dir>/probe/``: safetensors + JSON (layers, scaler, cues, exit string, thresholds, counts,
   metrics, model and tokenizer fingerprints);
7. ``bound.json``: the bound checked over ``bound_splits`` random calibration/test splits of the held-out
   problems (per-event wrong-exit rate and per-trace premature-exit rate for each delta);
8. evaluation with and without early exit (``eval_deltas``) on ``eval_benchmark``, online (the probe runs while
   generating), and on ``transfer_benchmark``: ``comparison.md`` / ``.json`` / ``.png`` and ``summary.json``.

Every stage's output is written atomically and reused when present, so a killed run resumes;
``early_exit_config.json`` refuses to mix work made with other settings.

    accelerate launch recipes/early_exit.py                                  # the lab default (CPU)
    python recipes/early_exit.py --output_dir runs/ee --deltas 0.05 0.1 --eval_deltas 0.05
    accelerate launch recipes/early_exit.py --config recipes/configs/qwen1.5b/early_exit.yaml
    effreason eval --model runs/early-exit-lab/start_model --benchmark lab --exit-probe runs/early-exit-lab/probe \
        --delta 0.05 --output OUT   # the model the probe was built on (the lab default warms the overthinker up)
"""

import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lab" / "early_exit.yaml"
RECIPE = "recipes/early_exit.py"
logger = logging.getLogger("recipes.early_exit")


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from effreason.early_exit import data
    from effreason.early_exit.args import parse_early_exit_args
    from effreason.early_exit.bound import bound_check
    from effreason.early_exit.conformal import calibrate
    from effreason.early_exit.cues import CueMatcher
    from effreason.early_exit.online import exit_ids
    from effreason.early_exit.probe import ExitProbe, model_fingerprint, train_mlp
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.posttrain import write_comparison
    from effreason.evaluation.prompts import load_problems
    from effreason.format import THINK_END
    from effreason.generation.thinking import single_token_id
    from effreason.grading import Grader
    from effreason.hidden import num_layers, resolve_layers
    from effreason.jsonl import atomic_directory, write_json, write_jsonl
    from effreason.models import (
        load_model_and_tokenizer,
        load_tokenizer,
        resolve_model_path,
    )
    from effreason.outputs import pin_settings, source_fingerprint, tokenizer_fingerprint
    from effreason.training.launch import main_process_output

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, eval_args = parse_early_exit_args(sys.argv[1:] if argv is None else argv, DEFAULT_CONFIG)
    root = main_process_output(args.model_name_or_path, args.output_dir, RECIPE)
    if root is None:  # one process does the work (the probe is small; generation is batched)
        return 0
    clock, seconds = time.perf_counter(), {}
    settings = {**args.settings(), "model_files": model_fingerprint(resolve_model_path(args.model_name_or_path)),
                "rollouts_file_sha256": source_fingerprint(args.rollouts_file) if args.rollouts_file else None}
    saved_path = root / "early_exit_config.json"
    pin_settings(saved_path, settings, {"recipe": asdict(args), "eval": asdict(eval_args)}, work="its work")

    # ---- 0. lab only: a start model that re-verifies once it has the answer (effreason.lab.trainers.warmup)
    model_name = args.model_name_or_path
    if args.lab_reverify_warmup_steps:
        from effreason.lab.trainers.warmup import reverify_start_model

        tic = time.perf_counter()
        model_name = reverify_start_model(resolve_model_path(model_name), root / "start_model",
                                          steps=args.lab_reverify_warmup_steps,
                                          learning_rate=args.lab_warmup_learning_rate, seed=args.seed)
        seconds["warmup"] = time.perf_counter() - tic
    model_path = resolve_model_path(model_name)
    tokenizer = load_tokenizer(model_path)

    # ---- problems, and the exit string
    source = ({"data": args.rollouts_file, "prompt_field": "problem", "id_field": "id"} if args.rollouts_file
              else {"benchmark": args.benchmark, "split": args.split, "data_dir": args.data_dir})
    problem_cfg = EvalConfig(output=str(root / "eval"), **source, limit=args.num_problems, model=model_name,
                             instruction=args.instruction, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, samples=args.samples_per_problem)
    task = load_problems(problem_cfg, tokenizer)
    exit_string = THINK_END + (args.answer_prefix if args.answer_prefix is not None else task.answer_prefix)
    forced = exit_ids(tokenizer, exit_string)
    matcher = CueMatcher(tokenizer, args.cues, single_token_id(tokenizer, THINK_END))
    matcher.require_end_id("recipes/early_exit.py")
    stages = data.Stages(root)
    grader = Grader(mode=task.grading, last_number_fallback=task.last_number_fallback)

    # ---- 1-2. rollouts, cue events and labels
    rollouts_path, events_path = root / data.ROLLOUTS_FILE, root / data.EVENTS_FILE
    backend = None
    try:
        if not rollouts_path.is_file():
            tic = time.perf_counter()
            if args.rollouts_file:
                rows = data.read_user_rollouts(args.rollouts_file, tokenizer, {p.id: p for p in task.problems})
            else:
                backend = _backend(args, model_path, problem_cfg, task, forced)
                rows = data.sample_rollouts(backend, task.problems, samples=args.samples_per_problem,
                                            max_new_tokens=problem_cfg.max_new_tokens, seed=args.seed)
            write_jsonl(rollouts_path, rows)
            seconds["rollouts"] = time.perf_counter() - tic
        rows = data.read_rollouts(rollouts_path)
        if not stages.reuse(events_path, rollouts_path):
            tic = time.perf_counter()
            events = data.find_events(rows, matcher)
            if not events:
                raise ValueError(f"no cue events ({', '.join(args.cues)}) in the thinking of {len(rows)} rollouts: "
                                 "check the cues, or that the model thinks in <think> ... </think>")
            if backend is None:
                backend = _backend(args, model_path, problem_cfg, task, forced)
            from effreason.generation.backends import Sampling

            backend.configure({}, Sampling(0.0, 1.0, args.seed))  # labels: greedy answers
            data.label_events(backend, grader, rows, events, forced, exit_string, answer_tokens=args.answer_tokens)
            stages.record(events_path, rollouts_path)
            write_jsonl(events_path, events)
            seconds["labels"] = time.perf_counter() - tic
    finally:
        if backend is not None:
            backend.close()
        grader.close()
    events = data.read_events(events_path)

    # ---- 3. features
    model, _ = load_model_and_tokenizer(model_path, dtype=args.dtype)
    depth = num_layers(model)
    layers = resolve_layers(args.layers, depth)
    features_path = root / data.FEATURES_FILE
    if not stages.reuse(features_path, events_path):
        tic = time.perf_counter()
        feats = data.event_features(model, rows, events, layers, max_batch_tokens=args.feature_max_batch_tokens,
                                    pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        stages.record(features_path, events_path)
        data.save_features(features_path, feats)
        seconds["features"] = time.perf_counter() - tic
    feats = data.load_features(features_path, len(events))
    del model

    # ---- 4-6. probe, calibration, artifact
    labels = np.array([e["label"] for e in events])
    problems = [e["problem"] for e in events]
    trained_on = data.train_problems([r["problem"] for r in rows], args.train_fraction,
                                     args.seed)  # by problem, over every rollout (a problem without cues too)
    train = np.array([q in trained_on for q in problems])
    held = ~train
    probe_dir = root / "probe"
    if not stages.reuse(probe_dir, events_path, features_path):
        tic = time.perf_counter()
        import torch

        mlp, mean, scale, metrics = train_mlp(
            feats[torch.from_numpy(train)], labels[train], [q for q, t in zip(problems, train, strict=True) if t],
            seed=args.seed, validation_fraction=args.validation_fraction, learning_rate=args.probe_learning_rate,
            max_epochs=args.probe_epochs, patience=args.probe_patience)
        probe = ExitProbe(mlp, mean, scale, layers, list(args.cues), exit_string, args.answer_tokens, [],
                          model={"name": model_name, "path": str(Path(model_path).resolve()),
                                 "weights": model_fingerprint(model_path), "adapter": None,
                                 "tokenizer": tokenizer_fingerprint(tokenizer),
                                 "num_layers": depth, "hidden_size": feats.shape[1] // len(layers)},
                          training=metrics)
        p_held = probe.predict(feats[torch.from_numpy(held)])
        probe.thresholds = calibrate(p_held, labels[held], args.deltas)
        probe.calibration = {"problems": len({q for q, h in zip(problems, held, strict=True) if h}),
                             "events": int(held.sum()), "positive_events": int(labels[held].sum()),
                             "train_problems": len({q for q, t in zip(problems, train, strict=True) if t})}
        stages.record(probe_dir, events_path, features_path)
        with atomic_directory(probe_dir, replace=probe_dir.exists()) as tmp:
            probe.save(tmp)
        seconds["probe"] = time.perf_counter() - tic
    probe = ExitProbe.load(probe_dir)

    # ---- 7. the bound over random calibration/test splits of the held-out problems
    import torch

    p_held = probe.predict(feats[torch.from_numpy(held)])
    held_idx = np.flatnonzero(held)
    held_traces = {t: r["problem"] for t, r in enumerate(rows) if r["problem"] not in trained_on}
    bound = bound_check(p_held, labels[held], [problems[i] for i in held_idx], [events[i]["trace"] for i in held_idx],
                        held_traces, {t: len(rows[t]["completion_ids"]) for t in held_traces},
                        np.array([events[i]["tokens_if_exit"] for i in held_idx]), args.deltas,
                        splits=args.bound_splits, seed=args.seed)
    write_json(root / "bound.json", bound)

    # ---- 8. the eval suite with and without early exit
    runs, transfer = {}, {}
    if eval_args.eval_benchmark:
        tic = time.perf_counter()
        runs = _evaluate(eval_args, root, args, model_name, probe_dir, eval_args.eval_benchmark, "")
        table = write_comparison(root, runs, "no_exit", f"Early exit (LYNX probe) on {eval_args.eval_benchmark}")
        seconds["eval"] = time.perf_counter() - tic
        print(table)
    if args.transfer_benchmark:
        tic = time.perf_counter()
        transfer = _evaluate(replace(eval_args, eval_split="test"), root, args, model_name, probe_dir,
                             args.transfer_benchmark,
                             f"{args.transfer_benchmark}-")
        write_comparison(root / "transfer", transfer, "no_exit",
                         f"Early exit, probe trained on {args.benchmark}, applied to {args.transfer_benchmark}")
        seconds["transfer"] = time.perf_counter() - tic
    seconds["total"] = time.perf_counter() - clock
    summary = {"seconds": seconds, "events": {"total": len(events), "positive": int(labels.sum()),
                                              "traces": len(rows), "problems": len(set(problems))},
               "probe": probe.training, "calibration": probe.calibration,
               "thresholds": [t.to_json() for t in probe.thresholds], "bound": bound,
               "eval": {k: _figures(v) for k, v in runs.items()}, "transfer": {k: _figures(v) for k, v in transfer.items()}}
    write_json(root / "summary.json", summary)
    for b in bound:
        print(f"delta {b['delta']:.2f}: wrong-exit rate {b['wrong_exit_rate']:.3f} (slack {b['slack_1se']:.3f}), "
              f"premature traces {b['premature_rate']:.3f}, exits {b['exit_rate']:.3f}, tokens x{b['token_ratio']:.2f}")
    print(f"\nprobe in {probe_dir}; wall time {seconds['total']:.0f} s")
    return 0


def _backend(args, model_path, problem_cfg, task, forced):
    """The rollout backend (sampling); labels reuse it, greedy."""
    from effreason.generation.backends import Sampling, build_backend

    longest = max(len(p.prompt_ids) for p in task.problems)
    return build_backend(args.backend, model_path, sampling=Sampling(args.temperature, args.top_p, args.seed),
                         dtype=args.dtype, batch_size=args.batch_size,
                         max_model_len=longest + problem_cfg.max_new_tokens + len(forced) + args.answer_tokens + 16)


def _evaluate(eval_args, root, args, model_name, probe_dir, benchmark, prefix):
    """The model without exit and with exit at each of ``eval_deltas``: eval runs under ``root/eval``."""
    from dataclasses import replace

    from effreason.evaluation.posttrain import evaluate_model

    base = replace(eval_args, eval_benchmark=benchmark)
    runs = {"no_exit": evaluate_model(base, root, f"{prefix}no_exit", model_name,
                                      instruction=args.instruction, data_dir=args.data_dir)}
    for delta in args.eval_deltas:
        methods = {**base.eval_methods, "early_exit": {"probe": str(probe_dir), "delta": delta}}
        runs[f"exit_d{delta:g}"] = evaluate_model(replace(base, eval_methods=methods), root, f"{prefix}exit_d{delta:g}",
                                                  model_name, instruction=args.instruction,
                                                  data_dir=args.data_dir)
    return runs


def _figures(results: dict) -> dict:
    """An eval run's headline figures, and for exit runs how often it exited and how often wrongly (per trace)."""
    from effreason.evaluation.store import SAMPLES_FILE
    from effreason.jsonl import read_jsonl

    keys = ("accuracy", "n", "tokens_mean", "tokens_median", "tokens_p90", "thinking_tokens_mean", "wall_time_s")
    out = {k: results.get(k) for k in keys}
    rows = read_jsonl(Path(results["config"]["output"]) / SAMPLES_FILE)
    infos = [(r, r["method_info"]["early_exit"]) for r in rows if "early_exit" in r.get("method_info", {})]
    if infos:
        out["exit_rate"] = sum(i["exited"] for _, i in infos) / len(rows)
        out["premature_exit_rate"] = sum(i["exited"] and not r["correct"] for r, i in infos) / len(rows)
    return out


if __name__ == "__main__":
    from effreason.errors import run_script

    sys.exit(run_script(main, RECIPE))
