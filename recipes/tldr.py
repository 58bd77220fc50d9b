"""TLDR: one model that obeys a length level in its prompt (arXiv 2505.07961).

GRPO on TRL's ``GRPOTrainer`` (via ``effreason.training.grpo.EfficientGRPOTrainer``) with a
length-penalised reward: each training prompt gets a level (short / medium / long) whose instruction is
appended to the prompt, and each level has its own token budget ``B_l`` and weight ``lambda_l``::

    r = 1[correct] - lambda_l * max(0, L - B_l) / B_l

(``effreason.rewards.TLDRLength``). How ours differs from the paper:

1. The paper does not specify the level distribution ``P(L)``, the weights or the prompt wording: these
   are the project's choices (``levels:``; ``level_sampling: uniform`` draws one level per problem,
   ``all`` puts every level of a problem in one batch, to contrast the levels on the same problem).
2. An optional floor ``F_l`` per level penalises completions shorter than it (without floors every
   level drifted to the shortest traces on the lab).
3. On the lab only: the level words' embeddings are re-drawn (``reinit_embeddings``, the lab model never
   read them) and a short SFT warm-up on level-styled lab traces (``lab_level_warmup_steps``,
   ``effreason.lab.trainers.levels``) precedes RL; the comparison reports the warm-up alone
   (``warmup-*``) next to the TLDR-trained levels.

After training, the start model and the trained model at every level are evaluated with the eval suite
and compared (``comparison.md`` / ``.png`` in ``output_dir``).

    accelerate launch recipes/tldr.py                         # the lab default (CPU, minutes)
    accelerate launch recipes/tldr.py --config recipes/configs/qwen1.5b/tldr.yaml
"""

import logging
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lab" / "tldr.yaml"
logger = logging.getLogger("recipes.tldr")


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    from effreason.evaluation.posttrain import EvalModel, evaluate_and_compare
    from effreason.models import check_model_source
    from effreason.outputs import check_output_path
    from effreason.training.args import TLDRArguments, parse_recipe_args
    from effreason.training.builders import (
        build_grpo_trainer,
        build_stage_rewards,
        grpo_details,
        trained_policy,
    )
    from effreason.training.checkpoints import train_once
    from effreason.training.data import add_length_levels, level_reward_specs, parse_levels, training_dataset
    from effreason.training.launch import check_process_group
    from effreason.training.output_dir import check_stage_config, claim_output_dir
    from effreason.training.stages import describe_stage, save_stage_config, stage_config, start_weights
    from effreason.training.tracking import configure_wandb

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    recipe, eval_args, grpo, model_args = parse_recipe_args(TLDRArguments, sys.argv[1:] if argv is None else argv,
                                                            DEFAULT_CONFIG)
    check_model_source(model_args.model_name_or_path, "model_name_or_path")
    check_output_path(grpo.output_dir, "output_dir")
    state, root, start_model = PartialState(), Path(grpo.output_dir), model_args.model_name_or_path
    check_process_group(state)  # before any work: duplicated runs would share output_dir
    if state.is_main_process:
        claim_output_dir(root, "recipes/tldr.py")  # a folder that is not this recipe's is refused untouched

    # the settings GRPO trains with, checked against an earlier run's first: after the lab warm-up (step 1),
    # from the model it saves, whose level words it re-draws
    warm_dir, reinit_words = root / "level_warmup", recipe.reinit_embeddings
    if recipe.lab_level_warmup_steps:
        model_args = replace(model_args, model_name_or_path=str(warm_dir))
        recipe = replace(recipe, reinit_embeddings=[])
    config = stage_config(describe_stage("tldr", {}, ()), grpo, recipe, model_args, start_weights(start_model))
    check_stage_config(grpo.output_dir, config, reused=[warm_dir] if recipe.lab_level_warmup_steps else [])

    # ---- 0. levels, the rewards (each level's budget and lambda) and the levelled prompts, before any training
    levels = parse_levels(recipe.levels)
    funcs, weights = build_stage_rewards(level_reward_specs(recipe.rewards, levels), grpo, "rewards")
    data = add_length_levels(training_dataset(recipe), levels, seed=grpo.seed, sampling=recipe.level_sampling)
    if recipe.level_sampling == "all" and grpo.shuffle_dataset:
        logger.warning("level_sampling: all with shuffle_dataset: true scatters a problem's levels over batches")
    if state.is_main_process:  # before the warm-up, which they describe too
        save_stage_config(grpo.output_dir, config)
    configure_wandb(grpo)

    # ---- 1. lab only: teach the start model to read the level words (SFT on level-styled lab traces)
    if recipe.lab_level_warmup_steps:
        from effreason.lab.trainers.levels import warm_started_model
        from effreason.models import resolve_model_path

        with state.main_process_first():
            warm_started_model(resolve_model_path(start_model), warm_dir,
                               {lvl.name: lvl.instruction for lvl in levels}, steps=recipe.lab_level_warmup_steps,
                               reinit_words=reinit_words, seed=grpo.seed)

    # ---- 2. GRPO with the level-budgeted length reward
    build = partial(build_grpo_trainer, grpo, model_args, data, funcs, weights,
                    reinit_embeddings=recipe.reinit_embeddings, dynamic_sampling=recipe.dynamic_sampling,
                    vllm_dtype=recipe.vllm_dtype)
    info = train_once(build, grpo.output_dir, grpo.resume_from_checkpoint,
                      skip_finished=bool(grpo.resume_from_checkpoint), details=grpo_details)

    # ---- 3. the eval suite: the start model, the warm-up alone and the trained model at every level
    if eval_args.eval_benchmark and state.is_main_process:
        model, adapter = trained_policy(info, model_args.model_name_or_path)
        models = {"start": EvalModel(start_model)}
        if recipe.lab_level_warmup_steps:
            models.update({f"warmup-{lvl.name}": EvalModel(model_args.model_name_or_path, instruction=lvl.instruction)
                           for lvl in levels})
        models.update({lvl.name: EvalModel(model, adapter, lvl.instruction) for lvl in levels})
        print(evaluate_and_compare(eval_args, root, models, baseline="start", data_dir=recipe.data_dir,
                                   title=f"TLDR on {recipe.dataset}: {eval_args.eval_benchmark}"))
    return 0


if __name__ == "__main__":
    from effreason.errors import run_script

    sys.exit(run_script(main, "recipes/tldr.py"))  # a user mistake: one line, exit code 2 (--debug: traceback)
