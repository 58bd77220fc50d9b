"""SFT on PIR-pruned reasoning traces (LIMOPro, arXiv 2505.19187).

PIR shortens the *training data*, not the model: every functional step of a trace (verification,
multi-method, error correction) is scored by how much removing it raises the perplexity of the gold
answer's tokens under a scorer model, and the lowest-scoring ones are removed up to a ratio of the
functional steps (progressive steps are always kept). A model fine-tuned on the pruned traces
learns to think as accurately in fewer tokens. This recipe runs the whole comparison:

0. lab only (``lab_slip_warmup_steps``): the start model is first warmed up on *slippy* lab traces,
   whose writer slips on wrap-around subtractions and catches the slip in its final re-check, so
   its traces mix redundant checks with checks that matter (``effreason.lab.traces.SLIPPY``,
   ``effreason.lab.trainers.warmup``); every variant starts from that model, and it scores PIR;
1. traces: lab traces of ``num_traces`` train problems in ``trace_style`` (or yours, with gold answers:
   a JSONL file or a Hugging Face dataset, ``traces_split`` / ``traces_subset`` / ``traces_columns``);
2. pruning: PIR with ``prune_scorer`` (default: the start model) and random pruning of the same
   share of functional steps (the baseline), with the code behind ``effreason prune``;
3. SFT with TRL's ``SFTTrainer`` from the same start model on each of unpruned / PIR / random data
   (``<output_dir>/unpruned``, ``pir``, ``random``): loss on the completion only, optional LoRA
   (``use_peft: true``), same seed and data order;
4. evaluation of the start model and the three trained ones with the eval suite (greedy), and
   ``comparison.md`` / ``.json`` / ``.png`` plus ``summary.json`` (stage times, data and eval figures).

How ours differs from the paper: steps are segmented and classified by rules, not by an LLM (see
``effreason.pruning``); PIR scores only the gold answer's tokens, placed in the trace's final
``\\boxed{}``; the scorer is the model being fine-tuned unless ``prune_scorer`` is set (the paper
scores with a separate model). Every stage is skipped when its output exists, so a killed run
resumes; ``data/settings.json`` refuses to mix data built with other settings, and each variant's
``stage_config.json`` a finished variant trained with others. ``output_dir`` must be new, empty or this
recipe's (``effreason.training.output_dir``).

    accelerate launch recipes/sft.py                      # the lab default (CPU, a few minutes)
    python recipes/sft.py --output_dir runs/sft-lab-r07 --prune_ratio 0.7
    accelerate launch recipes/sft.py --config recipes/configs/qwen1.5b/sft_lora.yaml
"""

import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lab" / "sft.yaml"
logger = logging.getLogger("recipes.sft")


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    from effreason.evaluation.posttrain import evaluate_model, write_comparison
    from effreason.jsonl import write_json
    from effreason.models import (
        check_model_source,
        load_model_and_tokenizer,
        load_tokenizer,
        resolve_model_path,
    )
    from effreason.outputs import check_output_path
    from effreason.sft.args import parse_sft_args
    from effreason.sft.data import (
        COMPLETION_FIELD,
        build_traces,
        check_settings,
        prune_variant,
        read_variant,
        sft_dataset,
    )
    from effreason.sft.report import data_figures, target_figures
    from effreason.sft.train import train_variant, trained_model, variant_config
    from effreason.training.launch import check_process_group
    from effreason.training.output_dir import check_stage_config, claim_output_dir
    from effreason.training.stages import save_stage_config, start_weights
    from effreason.training.tracking import configure_wandb

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipe, eval_args, sft, model_args = parse_sft_args(sys.argv[1:] if argv is None else argv, DEFAULT_CONFIG)
    check_model_source(model_args.model_name_or_path, "model_name_or_path")
    if recipe.prune_scorer:
        check_model_source(recipe.prune_scorer, "prune_scorer")
    check_output_path(sft.output_dir, "output_dir")
    state = PartialState()
    check_process_group(state)  # before any work: duplicated runs would share output_dir
    root, start = Path(sft.output_dir), model_args.model_name_or_path
    if state.is_main_process:
        claim_output_dir(root, "recipes/sft.py")  # a folder that is not this recipe's is refused untouched
    configure_wandb(sft)
    data_dir, clock, seconds = root / "data", time.perf_counter(), {}
    warm_dir = root / "start_model"
    train_start = str(warm_dir) if recipe.lab_slip_warmup_steps else start  # every variant starts from it
    scorer = recipe.prune_scorer or train_start
    data_settings = {"traces": recipe.traces, "num_traces": recipe.num_traces, "trace_style": recipe.trace_style,
                     "trace_seed": recipe.trace_seed, "prune_ratio": recipe.prune_ratio, "prune_scorer": scorer,
                     "segmenter": recipe.resolved_segmenter(), "answer_prefix": recipe.answer_prefix,
                     "seed": sft.seed, "lab_slip_warmup_steps": recipe.lab_slip_warmup_steps,
                     "lab_warmup_learning_rate": recipe.lab_warmup_learning_rate,
                     "start_weights": start_weights(start),
                     **({"prune_markers": recipe.prune_markers} if recipe.prune_markers else {}),
                     **({} if recipe.traces == "lab" else {
                         "traces_split": recipe.traces_split, "traces_subset": recipe.traces_subset,
                         "traces_columns": recipe.traces_columns,
                         "traces_skip_bad_rows": recipe.traces_skip_bad_rows})}
    # a variant that finished (skipped) or left checkpoints under other settings is refused before any work
    configs = {name: variant_config(sft, replace(model_args, model_name_or_path=train_start), root / name, name,
                                    data_settings, {"instruction": recipe.instruction,
                                                    "system_prompt": recipe.system_prompt})
               for name in recipe.variants}
    for name, config in configs.items():
        check_stage_config(root / name, config)

    # ---- 0. lab only: a slippy overthinker as the start model (see effreason.lab.trainers.warmup); data built with
    # other settings is refused first, before minutes of warm-up
    with state.main_process_first():
        check_settings(data_dir, data_settings)
    if state.is_main_process:  # the settings, once they are known to fit what output_dir holds
        write_json(root / "sft_config.json", {"recipe": {**asdict(recipe), **asdict(eval_args)}, "sft": sft.to_dict(),
                                              "model": asdict(model_args)})
        for name, config in configs.items():
            save_stage_config(root / name, config)
    if recipe.lab_slip_warmup_steps:
        from effreason.lab.trainers.warmup import slippy_start_model

        tic = time.perf_counter()
        with state.main_process_first():
            start = slippy_start_model(resolve_model_path(start), warm_dir, steps=recipe.lab_slip_warmup_steps,
                                       learning_rate=recipe.lab_warmup_learning_rate, seed=sft.seed)
        model_args = replace(model_args, model_name_or_path=start)
        seconds["warmup"] = time.perf_counter() - tic

    # ---- 1-2. traces, then PIR and random pruning of the same share of functional steps
    with state.main_process_first():
        rows = build_traces(data_dir / "traces.jsonl", traces=recipe.traces, num_traces=recipe.num_traces,
                            style=recipe.trace_style, seed=recipe.trace_seed, split=recipe.traces_split,
                            subset=recipe.traces_subset, columns=recipe.traces_columns,
                            skip_bad_rows=recipe.traces_skip_bad_rows)
        seconds["traces"] = time.perf_counter() - clock
        variant_rows, prune_summary = {"unpruned": rows}, {}
        for method in [v for v in ("pir", "random") if v in recipe.variants]:
            tic, path = time.perf_counter(), data_dir / f"{method}.jsonl"
            model, tokenizer = (load_model_and_tokenizer(scorer, dtype=model_args.dtype) if method == "pir"
                                else (None, load_tokenizer(start)))
            prune_summary[method] = prune_variant(
                rows, path, method=method, ratio=recipe.prune_ratio, tokenizer=tokenizer, model=model,
                segmenter=recipe.resolved_segmenter(), answer_prefix=recipe.answer_prefix,
                max_batch_tokens=recipe.prune_max_batch_tokens, seed=sft.seed, markers=recipe.prune_markers)
            variant_rows[method] = read_variant(path, rows)
            seconds[f"prune_{method}"] = time.perf_counter() - tic
            del model

    # ---- 3. SFT of each variant from the same start model
    trained = {}
    for name in recipe.variants:
        tic = time.perf_counter()
        data = sft_dataset(variant_rows[name], COMPLETION_FIELD[name], instruction=recipe.instruction,
                           system_prompt=recipe.system_prompt, tokenizer=load_tokenizer(start))
        trained[name] = train_variant(sft, model_args, data, root / name, name)
        seconds[f"train_{name}"] = time.perf_counter() - tic

    # ---- 4. eval suite on each trained model (and the start model), comparison table and plot
    if eval_args.eval_benchmark and state.is_main_process:
        runs = {}
        if recipe.eval_start:
            tic = time.perf_counter()
            runs["start"] = evaluate_model(eval_args, root, "start", resolve_model_path(start),
                                           instruction=recipe.instruction, data_dir=recipe.data_dir)
            seconds["eval_start"] = time.perf_counter() - tic
        for name, info in trained.items():
            tic = time.perf_counter()
            model, adapter = trained_model(info)
            runs[name] = evaluate_model(eval_args, root, name, model, adapter, instruction=recipe.instruction,
                                        data_dir=recipe.data_dir)
            seconds[f"eval_{name}"] = time.perf_counter() - tic
        baseline = "unpruned" if "unpruned" in runs else next(iter(runs))
        table = write_comparison(root, runs, baseline, f"SFT on pruned traces ({recipe.traces}, ratio "
                                 f"{recipe.prune_ratio}): {eval_args.eval_benchmark}")
        seconds["total"] = time.perf_counter() - clock
        summary = {"seconds": seconds, "data": data_figures(variant_rows, prune_summary, load_tokenizer(start)),
                   "train": trained, "eval": {k: _eval_figures(v) for k, v in runs.items()},
                   "targets": target_figures(runs)}
        write_json(root / "summary.json", summary)
        print(table)
        print(f"\nwall time {seconds['total']:.0f} s; targets: {summary['targets']}")
    return 0


def _eval_figures(results: dict) -> dict:
    keys = ("accuracy", "n", "tokens_mean", "tokens_median", "tokens_p90", "thinking_tokens_mean",
            "truncation_rate", "wall_time_s")
    return {k: results.get(k) for k in keys}


if __name__ == "__main__":
    from effreason.errors import run_script

    sys.exit(run_script(main, "recipes/sft.py"))  # a user mistake: one line, exit code 2 (--debug: traceback)
