"""LoRA reasoning adapters: reasoning as a small adapter on a base model, switched on per query.

After "Efficient Reasoning on the Edge" (arXiv 2603.16867; no code published: every detail below that the
paper leaves open is ours, see METHODS.md section 6 and ``effreason.adapters``):

1. **SFT** (TRL ``SFTTrainer``, PEFT LoRA, base frozen) on reasoning traces; a share of the prompts carry the
   instruction of the length bucket the trace's own thinking fits (``effreason.adapters.data``).
2. **RL on the adapter only** (TRL ``GRPOTrainer`` continuing the SFT adapter; the base weights stay
   byte-identical, also through vLLM weight syncs): each prompt asks for a bucket, reward
   ``1[correct] - penalty * (max(0, T - B) / B + max(0, F - T) / F)`` with ``T`` the thinking tokens, ``B`` the
   bucket's budget and ``F`` its optional floor (``effreason.adapters.buckets``).
3. **Router**: an MLP on the base model's state at the last prompt token predicts whether the base alone
   answers correctly; its threshold keeps the base's accuracy on routed queries at the target on calibration
   problems (``effreason.adapters.router``).
4. **Comparison** on the mixed split (``lab_mixed``) and the default test split (``lab``): base alone, adapter
   always on, adapter per bucket, routed; also the SFT adapter before RL (``compare_sft``), and the routed
   system on vLLM (one engine, a ``LoRARequest`` per adapter-routed prompt) against HF on the mixed split.

Writes ``<output_dir>/adapter/`` (PEFT; ``adapter_config.json`` names its base; ``effreason_adapter.json``
holds the base's fingerprints and the buckets), ``router/``, ``comparison.json`` / ``.md`` / ``-<bench>.png``
and ``summary.json``.

    accelerate launch recipes/lora_adapter.py                       # the lab default (2 CPU cores: 19 min)
    accelerate launch recipes/lora_adapter.py --config recipes/configs/qwen1.5b/lora_adapter.yaml
    effreason eval --model lab_base --adapter runs/lora-adapter-lab/adapter --router runs/lora-adapter-lab/router \\
        --benchmark lab_mixed --output OUT
"""

import logging
import shutil
import sys
import time
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lab" / "lora_adapter.yaml"
logger = logging.getLogger("recipes.lora_adapter")


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState
    from trl import ModelConfig, SFTConfig

    from effreason.adapters.args import LoRAAdapterArguments, rl_config
    from effreason.adapters.buckets import parse_buckets
    from effreason.evaluation.posttrain import EvalArguments
    from effreason.format import THINK_END
    from effreason.generation.thinking import single_token_id
    from effreason.jsonl import write_json
    from effreason.models import check_model_source, load_tokenizer, resolve_model_path
    from effreason.outputs import check_output_path
    from effreason.training.args import parse_config
    from effreason.training.launch import check_process_group
    from effreason.training.output_dir import claim_output_dir
    from effreason.training.tracking import configure_wandb

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipe, eval_args, sft, model_args = parse_config(
        (LoRAAdapterArguments, EvalArguments, SFTConfig, ModelConfig), sys.argv[1:] if argv is None else argv,
        DEFAULT_CONFIG)
    if not model_args.use_peft:
        raise ValueError("the reasoning adapter is a LoRA adapter: set use_peft: true (with lora_r, lora_alpha, "
                         "lora_target_modules)")
    base = resolve_model_path(check_model_source(model_args.model_name_or_path, "model_name_or_path"))
    check_output_path(sft.output_dir, "output_dir")
    root = Path(sft.output_dir)
    buckets = parse_buckets(recipe.buckets)
    rl_args = rl_config(recipe.rl, sft, str(root / "rl"))  # checked before any work
    tokenizer = load_tokenizer(base)
    think_end_id = single_token_id(tokenizer, THINK_END)
    if "rl" in recipe.stages and rl_args.max_steps != 0 and think_end_id is None:
        raise ValueError(f"{THINK_END!r} is not one token of {base}'s tokenizer: the RL reward counts thinking tokens "
                         "up to it; use a reasoning tokenizer or rl: {max_steps: 0}")
    state = PartialState()
    check_process_group(state)
    if state.is_main_process:
        claim_output_dir(root, "recipes/lora_adapter.py")
        write_json(root / "lora_adapter_config.json", {"recipe": {**asdict(recipe), **asdict(eval_args)},
                                                       "sft": sft.to_dict(), "rl": rl_args.to_dict(),
                                                       "model": asdict(model_args)})
    configure_wandb(sft)
    clock, seconds = time.perf_counter(), {}

    # ---- 1. SFT of the reasoning adapter
    sft_dir = root / "sft"
    tic = time.perf_counter()
    sft_info = _train_sft(recipe, sft, model_args, base, tokenizer, buckets, root, state)
    seconds["sft"] = time.perf_counter() - tic

    # ---- 2. RL on the adapter only, each prompt asking for a bucket
    final_src, rl_info = sft_dir, None
    if "rl" in recipe.stages and rl_args.max_steps != 0:
        tic = time.perf_counter()
        rl_info = _train_rl(recipe, rl_args, model_args, base, sft_dir, buckets, think_end_id)
        final_src = Path(rl_info["output_dir"])
        seconds["rl"] = time.perf_counter() - tic

    if not state.is_main_process:
        return 0
    adapter_dir = root / "adapter"
    _publish_adapter(final_src, adapter_dir, base, tokenizer, model_args, buckets,
                     {"sft": sft_info, "rl": rl_info})
    _publish_adapter(sft_dir, sft_dir, base, tokenizer, model_args, buckets, {"sft": sft_info, "rl": None})

    # ---- 3. the router on the base model's prompt states
    router_dir = root / "router"
    if "router" in recipe.stages:
        tic = time.perf_counter()
        _build_router(recipe, sft, base, tokenizer, router_dir)
        seconds["router"] = time.perf_counter() - tic

    # ---- 4. base / adapter / buckets / routed on each benchmark
    summary = {"seconds": seconds, "sft": sft_info, "rl": rl_info}
    if "eval" in recipe.stages:
        from effreason.adapters.report import compare
        from effreason.lab.trainers.warmup import training_threads

        tic = time.perf_counter()
        with training_threads():  # batches of 64 prompts decode faster on every core (same tokens, measured)
            summary["comparison"] = compare(recipe, eval_args, root, base=base, adapter=str(adapter_dir),
                                            sft_adapter=str(sft_dir) if rl_info else None,
                                            router=str(router_dir), buckets=buckets)
        seconds["eval"] = time.perf_counter() - tic
    seconds["total"] = time.perf_counter() - clock
    write_json(root / "summary.json", summary)
    if "comparison" in summary:
        print((root / "comparison.md").read_text(encoding="utf-8"))
    print(f"wall time {seconds['total']:.0f} s")
    return 0


def _train_sft(recipe, sft, model_args, base, tokenizer, buckets, root, state) -> dict:
    from effreason.adapters.data import bucket_counts, lab_sft_traces, label_buckets
    from effreason.jsonl import read_jsonl, write_json, write_jsonl
    from effreason.sft.data import build_traces, check_settings, sft_dataset
    from effreason.sft.train import train_variant, variant_config
    from effreason.training.output_dir import check_stage_config
    from effreason.training.stages import save_stage_config, start_weights

    data_dir = root / "data"
    settings = {"traces": recipe.traces, "num_traces": recipe.num_traces, "trace_seed": recipe.trace_seed,
                "verbose_share": recipe.verbose_share, "bucket_share": recipe.bucket_share,
                "buckets": {b.name: {"tokens": b.tokens, "instruction": b.instruction} for b in buckets},
                "start_weights": start_weights(base),
                **({} if recipe.traces == "lab" else {"traces_split": recipe.traces_split,
                                                      "traces_subset": recipe.traces_subset,
                                                      "traces_columns": recipe.traces_columns})}
    config = variant_config(sft, replace(model_args, model_name_or_path=base), root / "sft", "sft", settings,
                            {"instruction": recipe.instruction, "system_prompt": recipe.system_prompt})
    check_stage_config(root / "sft", config)
    with state.main_process_first():
        check_settings(data_dir, settings)
        path = data_dir / "traces.jsonl"
        if recipe.traces == "lab" and not path.is_file():
            write_jsonl(path, lab_sft_traces(recipe.num_traces, seed=recipe.trace_seed,
                                             verbose_share=recipe.verbose_share, bucket_share=recipe.bucket_share))
        rows = read_jsonl(path) if recipe.traces == "lab" else build_traces(
            path, traces=recipe.traces, num_traces=recipe.num_traces, style="verbose", seed=recipe.trace_seed,
            split=recipe.traces_split, subset=recipe.traces_subset, columns=recipe.traces_columns)
        rows = label_buckets(rows, buckets, tokenizer, bucket_share=recipe.bucket_share, seed=recipe.trace_seed)
        if state.is_main_process:
            write_json(data_dir / "buckets.json", bucket_counts(rows, buckets))
            save_stage_config(root / "sft", config)
    by_name = {b.name: b.instruction for b in buckets}
    data = sft_dataset(rows, "completion", instruction=recipe.instruction, system_prompt=recipe.system_prompt,
                       tokenizer=tokenizer, row_instructions=[by_name.get(r["bucket"]) for r in rows])
    from effreason.lab.trainers.warmup import training_threads

    with training_threads():  # batches of whole traces train faster on every core (OMP_NUM_THREADS=1 is for decoding)
        return train_variant(sft, replace(model_args, model_name_or_path=base), data, root / "sft", "sft")


def _train_rl(recipe, rl_args, model_args, base, sft_dir, buckets, think_end_id) -> dict:
    from effreason.adapters.data import bucket_reward_spec, rl_prompts
    from effreason.training.builders import build_grpo_trainer, build_stage_rewards, grpo_details
    from effreason.training.checkpoints import train_once
    from effreason.training.output_dir import check_stage_config
    from effreason.training.stages import save_stage_config, start_weights

    config = {"stage": "rl", "rl": rl_args.to_dict(), "model": asdict(model_args), "start_weights": start_weights(base),
              "buckets": recipe.buckets, "dataset": [recipe.rl_dataset, recipe.rl_dataset_split, recipe.rl_dataset_limit],
              "reward_mode": recipe.reward_mode}
    check_stage_config(rl_args.output_dir, config, after=[sft_dir])
    save_stage_config(rl_args.output_dir, config)
    data_args = SimpleNamespace(dataset=recipe.rl_dataset, dataset_split=recipe.rl_dataset_split,
                                dataset_limit=recipe.rl_dataset_limit, data_dir=recipe.data_dir, prompt_field="problem",
                                answer_field="answer", instruction=recipe.instruction,
                                system_prompt=recipe.system_prompt)
    data = rl_prompts(data_args, buckets, seed=rl_args.seed)
    funcs, weights = build_stage_rewards([bucket_reward_spec(buckets, think_end_id, recipe.reward_mode)], rl_args,
                                         "rl reward")
    build = partial(build_grpo_trainer, rl_args, replace(model_args, model_name_or_path=base), data, funcs, weights,
                    vllm_dtype=recipe.vllm_dtype, train_adapter=str(sft_dir))
    return train_once(build, rl_args.output_dir, rl_args.resume_from_checkpoint, skip_finished=True,
                      details=grpo_details)


def _publish_adapter(src: Path, dst: Path, base: str, tokenizer, model_args, buckets, training: dict) -> None:
    """The adapter's files (PEFT config and weights) in ``dst``, with ``effreason_adapter.json``."""
    from effreason.adapters.adapter import write_adapter_info
    from effreason.artifacts import model_record
    from effreason.hidden import model_shape

    if src != dst:
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
            if (src / name).is_file():
                shutil.copyfile(src / name, dst / name)
    depth, hidden = model_shape(base)
    write_adapter_info(dst, base=model_record(model_args.model_name_or_path, base, tokenizer, num_layers=depth,
                                              hidden_size=hidden),
                       buckets=buckets, training={k: v for k, v in training.items() if v is not None})


def _build_router(recipe, sft, base, tokenizer, router_dir: Path) -> None:
    from effreason.adapters.build import build_router, router_problems
    from effreason.adapters.router import META_FILE
    from effreason.artifacts import model_record
    from effreason.benchmarks import BENCHMARKS
    from effreason.hidden import model_shape, resolve_layers
    from effreason.jsonl import atomic_directory
    from effreason.models import load_model_and_tokenizer
    from effreason.training.stages import start_weights

    settings = {k: getattr(recipe, k) for k in ("router_dataset", "router_split", "router_calibration_split",
                                                 "router_problems", "router_calibration_problems", "router_layers",
                                                 "router_target_accuracy", "router_confidence",
                                                 "router_max_new_tokens", "instruction", "system_prompt")}
    settings.update(seed=sft.seed, base=start_weights(base))
    if (router_dir / META_FILE).is_file():
        import json

        from effreason.errors import UserError

        saved = json.loads((router_dir / META_FILE).read_text(encoding="utf-8")).get("training", {}).get("settings")
        if saved != json.loads(json.dumps(settings)):
            raise UserError(f"{router_dir} holds a router built with other settings or another base; delete that "
                            "folder to train a new one, or use another output_dir")
        logger.info("%s exists and was built with these settings: reusing the router", router_dir)
        return
    depth, hidden = model_shape(base)
    layers = resolve_layers(recipe.router_layers, depth)
    train_rows, cal_rows = router_problems(recipe.router_dataset, recipe.router_split, train=recipe.router_problems,
                                           calibration=recipe.router_calibration_problems, seed=sft.seed,
                                           tokenizer=tokenizer, instruction=recipe.instruction,
                                           system_prompt=recipe.system_prompt, data_dir=recipe.data_dir,
                                           calibration_split=recipe.router_calibration_split)
    model, _ = load_model_and_tokenizer(base, device="cpu" if sft.use_cpu else None)
    router = build_router(model, tokenizer, train_rows, cal_rows, layers=layers,
                          grading=BENCHMARKS[recipe.router_dataset].grading_mode,
                          target_accuracy=recipe.router_target_accuracy, confidence=recipe.router_confidence,
                          seed=sft.seed, max_new_tokens=recipe.router_max_new_tokens,
                          batch_size=recipe.router_batch_size,
                          model_record=model_record(base, base, tokenizer, num_layers=depth, hidden_size=hidden))
    router.training["settings"] = settings
    with atomic_directory(router_dir) as tmp:
        router.save(tmp)


if __name__ == "__main__":
    from effreason.errors import run_script

    sys.exit(run_script(main, "recipes/lora_adapter.py"))  # a user mistake: one line, exit code 2 (--debug: traceback)
