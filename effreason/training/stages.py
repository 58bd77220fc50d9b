"""One set of settings per training stage, with one precedence.

For every stage, later wins: the dataclass defaults < the YAML's top level < the YAML's block of that
stage (``stage1:`` / ``stage2:``) < the command line. The block applies whichever stage runs (``stage:
2`` alone too), and a command-line flag beats it (``--max_steps 0`` trains nothing even with a block).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from effreason.jsonl import write_json
from effreason.training.args import check_overrides

logger = logging.getLogger(__name__)

#: Settings TRL derives other settings from at construction: the same for every stage of a run.
SHARED_STAGE_KEYS = ("per_device_train_batch_size", "num_generations", "steps_per_generation",
                     "generation_batch_size", "gradient_accumulation_steps", "use_vllm", "vllm_mode")
#: Keys that say which stages run: meaningless inside a stage's block.
STAGE_STRUCTURE_KEYS = ("stage", "stage1", "stage2")
STAGE_CONFIG_FILE = "stage_config.json"


def stage_args(grpo_args: Any, recipe: Any, overrides: Mapping[str, Any], output_dir: str,
               cli_keys: Collection[str] = ()) -> tuple[Any, Any]:
    """Copies of the GRPO config and recipe arguments with a stage's block applied.

    Args:
        overrides: the stage's block of the YAML.
        output_dir: the stage's output folder (a block's own ``output_dir`` wins over it).
        cli_keys: settings given on the command line (``effreason.training.args.command_line_keys``):
            their parsed value is kept over the block's.

    Raises:
        ValueError: an unknown key (with the closest valid ones), a batch-layout key
            (``SHARED_STAGE_KEYS``) that must be the same in every stage, or a stage-structure key.
    """
    check_overrides("stage overrides", overrides, [grpo_args, recipe])
    shared = sorted(set(overrides) & set(SHARED_STAGE_KEYS))
    if shared:
        raise ValueError(f"stage overrides cannot change {shared}: set them once, at the top level of the config")
    nested = sorted(set(overrides) & set(STAGE_STRUCTURE_KEYS))
    if nested:
        raise ValueError(f"stage overrides cannot hold {nested}: they choose the stages, at the top level")
    grpo = copy.deepcopy(grpo_args)
    grpo.output_dir = output_dir
    recipe_keys = {}
    for key, value in overrides.items():
        if key in cli_keys:
            continue
        if hasattr(grpo, key):
            setattr(grpo, key, value)
        else:
            recipe_keys[key] = value
    return grpo, replace(recipe, **recipe_keys)


def describe_stage(name: str, overrides: Mapping[str, Any], cli_keys: Collection[str]) -> dict:
    """What a stage's block changed and which of its keys the command line overruled (for the log)."""
    return {"stage": name,
            "from_stage_block": {k: v for k, v in overrides.items() if k not in cli_keys},
            "command_line_over_stage_block": sorted(k for k in overrides if k in cli_keys)}


def stage_config(about: dict, grpo_args: Any, recipe: Any, model_args: Any, start_weights: str | None) -> dict:
    """A stage's resolved settings, as ``<stage dir>/stage_config.json`` holds them: ``about``
    (``describe_stage``), the ``recipe``, ``grpo`` and ``model`` settings and the fingerprint of the
    weights the recipe started from (``start_weights``)."""
    return {**about, "recipe": asdict(recipe), "grpo": grpo_args.to_dict(), "model": asdict(model_args),
            "start_weights": start_weights}


def start_weights(name_or_path: str) -> str | None:
    """Fingerprint of the model a recipe starts from (``effreason.outputs.weights_fingerprint``, ``lab``
    resolved): part of every stage's settings, so a rebuilt lab checkpoint or retrained start model is not
    taken for the one an earlier run of the same settings started from."""
    from effreason.models import resolve_model_path
    from effreason.outputs import weights_fingerprint

    return weights_fingerprint(resolve_model_path(name_or_path))


def save_stage_config(output_dir: str | Path, config: Mapping[str, Any]) -> None:
    """Log a stage's resolved settings (``stage_config``, or an SFT variant's) and write them to
    ``<output_dir>/stage_config.json``; ``effreason.training.output_dir.check_stage_config`` comes first."""
    block, kept = config.get("from_stage_block"), config.get("command_line_over_stage_block")
    logger.info("%s: settings%s%s -> %s", config["stage"], f" from its block {block}" if block else "",
                f"; the command line kept {kept}" if kept else "", output_dir)
    write_json(Path(output_dir) / STAGE_CONFIG_FILE, dict(config))
