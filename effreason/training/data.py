"""Training prompts for the RL recipes, and TLDR's length levels.

Every dataset becomes rows with ``prompt`` (chat messages) and ``answer`` (the gold answer the
correctness reward grades against); extra columns (``id``, ``length_level``) reach the rewards as
keyword arguments.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

from datasets import Dataset

from effreason.format import resolve_instruction, with_instruction, with_system_prompt
from effreason.training.args import LEVEL_SAMPLING

logger = logging.getLogger(__name__)


def training_dataset(recipe: Any) -> Dataset:
    """The recipe's training prompts: a benchmark split (lab, gsm8k, ...) or a JSONL file of problems.

    Args:
        recipe: ``TrainingDataArguments`` (``dataset``, ``dataset_split``, ``dataset_limit``, ``data_dir``,
            ``prompt_field``, ``answer_field``, ``instruction``, ``system_prompt``).
    """
    from effreason.benchmarks import BENCHMARKS, load_benchmark, load_jsonl_benchmark

    if recipe.dataset in BENCHMARKS:
        data = load_benchmark(recipe.dataset, data_dir=recipe.data_dir, split=recipe.dataset_split,
                              limit=recipe.dataset_limit)
        if recipe.instruction:
            extra = resolve_instruction(recipe.instruction)
            data = data.map(lambda row: {"prompt": with_instruction(row["prompt"], extra)})
    elif recipe.dataset.endswith((".jsonl", ".json")):
        instruction = resolve_instruction(recipe.instruction)
        data = load_jsonl_benchmark(recipe.dataset, prompt_field=recipe.prompt_field,
                                    answer_field=recipe.answer_field, instruction=instruction,
                                    limit=recipe.dataset_limit)
    else:
        raise ValueError(f"dataset {recipe.dataset!r} is neither a benchmark ({', '.join(BENCHMARKS)}) "
                         "nor a .jsonl file of problems")
    if recipe.system_prompt:
        data = data.map(lambda row: {"prompt": with_system_prompt(row["prompt"], recipe.system_prompt)})
    logger.info("training on %d prompts from %s", len(data), recipe.dataset)
    return data.select_columns(["id", "prompt", "answer"])


@dataclass(frozen=True)
class LengthLevel:
    """One TLDR length level: the instruction added to the prompt, its token budget and penalty weight."""

    name: str
    budget: int
    lam: float
    instruction: str
    floor: int | None = None


def parse_levels(levels: Mapping[str, Any]) -> list[LengthLevel]:
    """Length levels from config: ``{short: {budget: 48, lambda: 1.0, instruction: "level short"}, ...}``.

    ``instruction`` defaults to ``"level <name>"`` (the lab's wording); ``lambda`` to 1.0; ``floor``
    (minimum tokens, see ``effreason.rewards.TLDRLength``) to none.

    Raises:
        ValueError: naming the level and the missing or invalid setting.
    """
    if not isinstance(levels, Mapping) or not levels:
        raise ValueError("levels must map each level name to {budget, lambda, instruction}, e.g. "
                         "{short: {budget: 48}, medium: {budget: 96}, long: {budget: 192}}")
    out = []
    for name, spec in levels.items():
        budget, lam, instruction, floor = length_fields(f"levels.{name}", spec, budget="budget", weight="lambda",
                                                        instruction=lambda _, n=name: f"level {n}", unit="tokens")
        out.append(LengthLevel(str(name), budget, lam, instruction, floor))
    return out


def length_fields(where: str, spec: Any, *, budget: str, weight: str, instruction: Callable[[int], str],
                  unit: str) -> tuple[int, float, str, int | None]:
    """One length level's (or reasoning-adapter bucket's) settings, checked: ``(budget, weight, instruction,
    floor)``. ``budget`` and ``weight`` name their keys (TLDR levels: ``budget`` / ``lambda``; buckets:
    ``tokens`` / ``penalty``); ``instruction(budget)`` is the default wording; ``weight`` defaults to 1.0, ``floor``
    (``0 < floor < budget``) to none.

    Raises:
        ValueError: naming ``where`` and the missing, unknown or invalid key.
    """
    keys = (budget, weight, "instruction", "floor")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping with {' / '.join(keys)}, got {spec!r}")
    unknown = sorted(set(spec) - set(keys))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid: {', '.join(keys)}")
    size = spec.get(budget)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"{where}.{budget} must be a positive number of {unit}, got {size!r}")
    lam = spec.get(weight, 1.0)
    if isinstance(lam, bool) or not isinstance(lam, Real) or lam < 0:
        raise ValueError(f"{where}.{weight} must be a number >= 0, got {lam!r}")
    text = spec["instruction"] if "instruction" in spec else instruction(size)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}.instruction must be non-empty text, got {text!r}")
    floor = spec.get("floor")
    if floor is not None and (isinstance(floor, bool) or not isinstance(floor, int) or not 0 < floor < size):
        raise ValueError(f"{where}.floor must be a number of {unit} between 0 and {size} (the {budget}), "
                         f"got {floor!r}")
    return size, float(lam), text, floor


def add_length_levels(data: Dataset, levels: list[LengthLevel], seed: int, column: str = "length_level",
                      sampling: str = "uniform") -> Dataset:
    """Give prompts a level and append that level's instruction to them.

    Args:
        sampling: ``"uniform"``: each problem once, with a level drawn uniformly (seeded).
            ``"all"``: each problem once per level, the copies consecutive (problems shuffled with
            ``seed``); train with ``shuffle_dataset: false`` so one batch holds the same problem at
            every level, which contrasts the levels on identical problems (the project's choice).
    """
    if sampling not in LEVEL_SAMPLING:
        raise ValueError(f"level_sampling must be one of {list(LEVEL_SAMPLING)}, got {sampling!r}")
    rng = random.Random(seed)
    if sampling == "uniform":
        drawn = [rng.choice(levels) for _ in range(len(data))]
        rows = list(range(len(data)))
    else:
        order = list(range(len(data)))
        rng.shuffle(order)
        rows = [i for i in order for _ in levels]
        drawn = [lvl for _ in order for lvl in levels]
        data = data.select(rows)
    data = data.add_column(column, [lvl.name for lvl in drawn])
    return data.map(lambda row, i: {"prompt": with_instruction(row["prompt"], drawn[i].instruction)},
                    with_indices=True)


def level_reward_specs(specs: list, levels: list[LengthLevel]) -> list:
    """Reward specs with the ``tldr`` reward's budgets, lambdas and floors filled from ``levels``
    (a setting the spec gives itself is kept)."""
    return [_with_levels(spec, levels) for spec in specs]


def _with_levels(spec: Any, levels: list[LengthLevel]) -> Any:
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
