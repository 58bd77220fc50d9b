"""The RL recipes' main functions: ``recipes/lgrpo.py`` and ``recipes/tldr.py`` call these."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from effreason.training.args import parse_recipe_args
from effreason.training.data import add_length_levels, parse_levels, training_dataset
from effreason.training.run import configure_wandb, evaluate, stage_args, train_stage, write_comparison

logger = logging.getLogger(__name__)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _trained_model(model_args: Any, info: dict, start: str) -> tuple[str, str | None]:
    """``(model, adapter)`` to evaluate or continue from: the stage's weights, or its start + adapter."""
    if info.get("peft"):
        return start, info["output_dir"]
    return info["output_dir"], None


def run_lgrpo(argv: list[str], default_config: str | Path) -> int:
    """ConciseR's stage 1 (GRPO++), stage 2 (L-GRPO) or both in turn; then evaluate and compare."""
    _setup_logging()
    recipe, grpo, model_args = parse_recipe_args(argv, str(default_config))
    configure_wandb(grpo)
    root = Path(grpo.output_dir)
    stages = ["1", "2"] if recipe.stage == "both" else [recipe.stage]
    start = model_args.model_name_or_path
    trained: dict[str, tuple[str, str | None]] = {}
    adapter = None
    for stage in stages:
        if recipe.stage == "both":
            overrides = recipe.stage1 if stage == "1" else recipe.stage2
            stage_grpo, stage_recipe = stage_args(grpo, recipe, overrides, str(root / f"stage{stage}"))
        else:
            stage_grpo, stage_recipe = grpo, recipe
        stage_model_args = replace(model_args, model_name_or_path=start)
        data = training_dataset(stage_recipe)
        logger.info("stage %s: rewards %s, %s steps -> %s", stage, stage_recipe.rewards, stage_grpo.max_steps,
                    stage_grpo.output_dir)
        info = train_stage(stage_grpo, stage_model_args, stage_recipe, data, stage_recipe.rewards, adapter)
        trained[f"stage{stage}"] = _trained_model(model_args, info, info.get("policy_path", start))
        start, adapter = trained[f"stage{stage}"]
    if recipe.eval_benchmark and _is_main_process():
        runs = {"start": evaluate(recipe, root, "start", model_args.model_name_or_path)}
        for name, (model, adapter) in trained.items():
            runs[name] = evaluate(recipe, root, name, model, adapter)
        print(write_comparison(root, runs, "start", f"L-GRPO on {recipe.dataset}: {recipe.eval_benchmark}"))
    return 0


def run_tldr(argv: list[str], default_config: str | Path) -> int:
    """TLDR: one model, a length level in each prompt, each level with its own budget; then evaluate
    the start model and every level of the trained one, and compare."""
    _setup_logging()
    recipe, grpo, model_args = parse_recipe_args(argv, str(default_config))
    configure_wandb(grpo)
    levels = parse_levels(recipe.levels)
    data = add_length_levels(training_dataset(recipe), levels, seed=grpo.seed, sampling=recipe.level_sampling)
    if recipe.level_sampling == "all" and grpo.shuffle_dataset:
        logger.warning("level_sampling: all with shuffle_dataset: true scatters a problem's levels over batches")
    specs = [_with_levels(spec, levels) for spec in recipe.rewards]
    root = Path(grpo.output_dir)
    start_model = model_args.model_name_or_path
    if recipe.lab_level_warmup_steps:
        from accelerate import PartialState

        from effreason.lab.trainers.levels import warm_started_model
        from effreason.models import resolve_model_path

        with PartialState().main_process_first():
            warm = warm_started_model(resolve_model_path(start_model), root / "level_warmup",
                                      {lvl.name: lvl.instruction for lvl in levels},
                                      steps=recipe.lab_level_warmup_steps, reinit_words=recipe.reinit_embeddings,
                                      seed=grpo.seed)
        model_args = replace(model_args, model_name_or_path=warm)
        recipe = replace(recipe, reinit_embeddings=[])  # done before the warm-up
    info = train_stage(grpo, model_args, recipe, data, specs)
    if recipe.eval_benchmark and _is_main_process():
        model, adapter = _trained_model(model_args, info, info.get("policy_path", model_args.model_name_or_path))
        runs = {"start": evaluate(recipe, root, "start", start_model)}
        if recipe.lab_level_warmup_steps:
            for level in levels:
                runs[f"warmup-{level.name}"] = evaluate(recipe, root, f"warmup-{level.name}",
                                                        model_args.model_name_or_path, instruction=level.instruction)
        for level in levels:
            runs[level.name] = evaluate(recipe, root, level.name, model, adapter, instruction=level.instruction)
        print(write_comparison(root, runs, "start", f"TLDR on {recipe.dataset}: {recipe.eval_benchmark}"))
    return 0


def _with_levels(spec: Any, levels: list) -> Any:
    """Fill the ``tldr`` reward's budgets and lambdas from ``levels`` unless the spec sets them."""
    name = spec if isinstance(spec, str) else spec.get("name")
    if name != "tldr":
        return spec
    spec = {"name": "tldr"} if isinstance(spec, str) else dict(spec)
    spec.setdefault("budgets", {lvl.name: lvl.budget for lvl in levels})
    spec.setdefault("lambdas", {lvl.name: lvl.lam for lvl in levels})
    floors = {lvl.name: lvl.floor for lvl in levels if lvl.floor is not None}
    if floors:
        spec.setdefault("floors", floors)
    return spec
