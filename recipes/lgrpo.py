"""L-GRPO: make a reasoning model shorter without making it worse (ConciseR, arXiv 2505.21178).

Two stages on TRL's ``GRPOTrainer`` (via ``effreason.training.grpo.EfficientGRPOTrainer``):

1. **GRPO++**: GRPO with clip-higher (``epsilon_high``), dynamic sampling and an entropy bonus
   (``entropy_coef``), on the correctness reward.
2. **L-GRPO**: the length reward acts only in groups where every rollout is correct
   (``effreason.rewards.LGRPO``); dynamic sampling keeps those groups, since their rewards differ by length.

How ours differs from the paper:

1. Dynamic sampling masks groups with all-equal rewards out of the loss; DAPO refills the batch with
   new prompts, which TRL has no hook for, so a step trains on fewer groups (``effreason.training.grpo``).
2. The length reward counts tokens of the completion, capped by ``max_completion_length``
   (``effreason.rewards.LGRPO``), and is added to the correctness reward with the spec's weights.
3. Stage 2 starts from stage 1's saved weights with a fresh optimizer (and, after a LoRA stage 1,
   from the merged model), not from the running optimizer state.

``stage: 1``, ``2`` or ``both`` (in turn). Settings, later wins, per stage: defaults < the YAML's top
level < its ``stage1:`` / ``stage2:`` block < the command line; the block of the stage that runs applies
with ``stage: 2`` alone too. Each stage's settings are logged and saved in ``<stage dir>/stage_config.json``;
a finished stage (skipped) or a checkpoint (resumed) is reused only with the same settings, and only in
an ``output_dir`` this recipe made (``effreason.training.output_dir``).
With ``stage: both`` the stages train into ``<output_dir>/stage1`` and ``stage2``; a single stage trains
into ``output_dir`` itself. Every stage's rewards and data are built before any training, so a typo in
stage 2's rewards fails in seconds, not after stage 1. Then the start model and each stage are evaluated
with the eval suite and compared (``comparison.md`` / ``.png`` in ``output_dir``).

    accelerate launch recipes/lgrpo.py                        # the lab default (CPU, minutes)
    accelerate launch recipes/lgrpo.py --stage 2 --max_steps 20    # stage 2 only, its block's reward
    accelerate launch recipes/lgrpo.py --config recipes/configs/qwen1.5b/lgrpo_colocate.yaml
"""

import logging
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lab" / "lgrpo.yaml"
logger = logging.getLogger("recipes.lgrpo")


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    from effreason.evaluation.posttrain import EvalModel, evaluate_and_compare
    from effreason.models import check_model_source
    from effreason.outputs import check_output_path
    from effreason.training.args import LGRPOArguments, command_line_keys, parse_recipe_args
    from effreason.training.builders import (
        build_grpo_trainer,
        build_stage_rewards,
        grpo_details,
        trained_policy,
    )
    from effreason.training.checkpoints import train_once
    from effreason.training.data import training_dataset
    from effreason.training.launch import check_process_group
    from effreason.training.output_dir import check_stage_config, claim_output_dir
    from effreason.training.stages import (
        describe_stage,
        save_stage_config,
        stage_args,
        stage_config,
        start_weights,
    )
    from effreason.training.tracking import configure_wandb

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    recipe, eval_args, grpo, model_args = parse_recipe_args(LGRPOArguments, argv, DEFAULT_CONFIG)
    check_model_source(model_args.model_name_or_path, "model_name_or_path")
    check_output_path(grpo.output_dir, "output_dir")
    state, root = PartialState(), Path(grpo.output_dir)
    check_process_group(state)  # before any work: duplicated runs would share output_dir
    if state.is_main_process:
        claim_output_dir(root, "recipes/lgrpo.py")  # a folder that is not this recipe's is refused untouched
    cli_keys = command_line_keys(argv)

    # ---- 0. every stage's settings, rewards and data, before any training: a typo fails in seconds
    stages, start_fp = {}, start_weights(model_args.model_name_or_path)
    for stage in (["1", "2"] if recipe.stage == "both" else [recipe.stage]):
        name = f"stage{stage}"
        block = recipe.stage1 if stage == "1" else recipe.stage2
        out = str(root / name) if recipe.stage == "both" else grpo.output_dir
        stage_grpo, stage_recipe = stage_args(grpo, recipe, block, out, cli_keys)
        config = stage_config(describe_stage(name, block, cli_keys), stage_grpo, stage_recipe, model_args,
                              start_fp)
        # a finished stage or a checkpoint made with other settings, or after a redone stage 1, is refused
        check_stage_config(out, config, after=[s[0].output_dir for s in stages.values()])
        stages[name] = [stage_grpo, stage_recipe, config, build_stage_rewards(stage_recipe.rewards, stage_grpo,
                                                                              f"{name} rewards")]
    for stage in stages.values():  # the data, once every stage's settings and rewards are valid
        stage.append(training_dataset(stage[1]))
    for stage_grpo, _, config, _, _ in stages.values():  # written once every stage is valid
        if state.is_main_process:
            save_stage_config(stage_grpo.output_dir, config)
    configure_wandb(grpo)

    # ---- 1-2. GRPO++ (correctness), then L-GRPO (length in all-correct groups), each from the last
    start, adapter = model_args.model_name_or_path, None
    trained = {}
    for name, (stage_grpo, stage_recipe, _, (funcs, weights), data) in stages.items():
        stage_model_args = replace(model_args, model_name_or_path=start)
        logger.info("%s: rewards %s, %s steps -> %s", name, stage_recipe.rewards, stage_grpo.max_steps,
                    stage_grpo.output_dir)
        build = partial(build_grpo_trainer, stage_grpo, stage_model_args, data, funcs, weights, adapter=adapter,
                        reinit_embeddings=stage_recipe.reinit_embeddings, vllm_dtype=stage_recipe.vllm_dtype,
                        dynamic_sampling=stage_recipe.dynamic_sampling)
        info = train_once(build, stage_grpo.output_dir, stage_grpo.resume_from_checkpoint,
                          skip_finished=bool(stage_grpo.resume_from_checkpoint), details=grpo_details)
        trained[name] = trained_policy(info, start)
        start, adapter = trained[name]

    # ---- 3. the eval suite on the start model and each stage, compared
    if eval_args.eval_benchmark and state.is_main_process:
        models = {"start": EvalModel(model_args.model_name_or_path)}
        models.update({name: EvalModel(model, adapter) for name, (model, adapter) in trained.items()})
        print(evaluate_and_compare(eval_args, root, models, baseline="start", data_dir=recipe.data_dir,
                                   title=f"L-GRPO on {recipe.dataset}: {eval_args.eval_benchmark}"))
    return 0


if __name__ == "__main__":
    from effreason.errors import run_script

    sys.exit(run_script(main, "recipes/lgrpo.py"))  # a user mistake: one line, exit code 2 (--debug: traceback)
