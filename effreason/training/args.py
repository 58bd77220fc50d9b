"""Recipe configuration: TRL's ``GRPOConfig`` and ``ModelConfig`` plus effreason's recipe arguments.

``recipes/lgrpo.py`` parses ``LGRPOArguments``, ``recipes/tldr.py`` ``TLDRArguments`` (both share
``TrainingDataArguments``), each with ``effreason.evaluation.posttrain.EvalArguments``.

A recipe reads ``--config file.yaml`` (TRL's ``TrlParser``: the YAML sets defaults, the command line
overrides them, ``env:`` sets environment variables). Keys that belong to no dataclass are an error
that names the key and the closest valid names, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

STAGE_CHOICES = ("1", "2", "both")


@dataclass
class TrainingDataArguments:
    """What every RL recipe adds to TRL's GRPO configuration: data, rewards, dynamic sampling."""

    dataset: str = field(default="lab", metadata={"help": "lab, gsm8k, math500, ... (a benchmark name) or a "
                                                  "JSONL file of problems"})
    dataset_split: str = field(default="train", metadata={"help": "split of a benchmark dataset"})
    dataset_limit: int | None = field(default=None, metadata={"help": "first N training problems only"})
    data_dir: str | None = field(default=None, metadata={
        "help": "offline benchmark copies (<dir>/<name>/<split>.jsonl), for training and eval"})
    prompt_field: str = field(default="problem", metadata={"help": "problem text field of a JSONL dataset"})
    answer_field: str = field(default="answer", metadata={"help": "gold answer field of a JSONL dataset"})
    instruction: str | None = field(default=None, metadata={"help": "text appended to each JSONL problem; "
                                                            "`math` = the boxed-answer instruction"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message for every prompt"})
    rewards: list[str] = field(default_factory=lambda: ["correctness"], metadata={
        "help": "reward specs: names, or dicts with name / weight / parameters in the YAML"})
    dynamic_sampling: bool = field(default=False, metadata={
        "help": "mask groups whose rewards are all equal out of the loss (DAPO filter, no refill)"})
    vllm_dtype: str | None = field(default=None, metadata={
        "help": "dtype of the colocated vLLM engine (TRL passes none; on CPU vLLM would use bfloat16)"})
    reinit_embeddings: list[str] = field(default_factory=list, metadata={
        "help": "single tokens whose input embeddings are re-drawn before training (tokens a from-scratch "
                "model never read, e.g. the lab's level words); empty for pretrained models"})

    def __post_init__(self) -> None:
        self.rewards = [_maybe_json(spec) for spec in self.rewards]


@dataclass
class LGRPOArguments(TrainingDataArguments):
    """``recipes/lgrpo.py``: the data and rewards, plus which ConciseR stage(s) to train."""

    stage: str = field(default="1", metadata={"help": "1 (GRPO++), 2 (L-GRPO) or both, in turn"})
    stage1: dict = field(default_factory=dict, metadata={
        "help": "stage 1's settings over the top level (the command line still wins)"})
    stage2: dict = field(default_factory=dict, metadata={
        "help": "stage 2's settings over the top level (the command line still wins)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stage = str(self.stage)
        if self.stage not in STAGE_CHOICES:
            raise ValueError(f"stage must be one of {list(STAGE_CHOICES)}, got {self.stage!r}")


LEVEL_SAMPLING = ("uniform", "all")


@dataclass
class TLDRArguments(TrainingDataArguments):
    """``recipes/tldr.py``: the data and rewards, plus the length levels."""

    levels: dict = field(default_factory=dict, metadata={"help": "level -> {budget, lambda, instruction, floor}"})
    level_sampling: str = field(default="uniform", metadata={
        "help": "uniform (one random level per problem) or all (every level of each problem, consecutive; use "
                "with shuffle_dataset: false)"})
    lab_level_warmup_steps: int = field(default=0, metadata={
        "help": "on the lab: SFT steps on level-styled lab traces before RL (0: none; recipes/tldr.py)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.level_sampling not in LEVEL_SAMPLING:
            raise ValueError(f"level_sampling must be one of {list(LEVEL_SAMPLING)}, got {self.level_sampling!r}")
        if self.lab_level_warmup_steps < 0:
            raise ValueError(f"lab_level_warmup_steps must be >= 0, got {self.lab_level_warmup_steps}")


def _maybe_json(spec: Any) -> Any:
    """A reward spec given on the command line as JSON (``'{"name": "lgrpo", "alpha": 1}'``)."""
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            return json.loads(spec)
        except json.JSONDecodeError as e:
            raise ValueError(f"reward spec {spec!r} looks like JSON but does not parse: {e}") from e
    return spec


def valid_keys(dataclass_types: Sequence[type]) -> set[str]:
    """Every field name of the dataclasses (the keys a recipe YAML may hold), plus ``env``."""
    return {f.name for dc in dataclass_types for f in fields(dc)} | {"env"}


def unknown_key_error(keys: Sequence[str], valid: set[str], where: str) -> ValueError:
    """A ``ValueError`` naming each unknown key and its closest valid spellings."""
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, sorted(valid), n=3, cutoff=0.6)
        parts.append(f"{key!r}" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""))
    return ValueError(f"unknown setting(s) in {where}: {', '.join(parts)}")


def check_overrides(name: str, overrides: Mapping[str, Any], objects: Sequence[Any]) -> None:
    """Reject stage overrides that are not fields of any of ``objects`` (a typo in ``stage1:``)."""
    if not isinstance(overrides, Mapping):
        raise ValueError(f"{name} must be a mapping of settings, got {overrides!r}")
    valid = {f.name for obj in objects for f in fields(obj)}
    unknown = [k for k in overrides if k not in valid]
    if unknown:
        raise unknown_key_error(unknown, valid, name)


def parse_config(types: Sequence[type], argv: Sequence[str], default_config: str | None = None) -> tuple:
    """Parse one instance of each dataclass in ``types`` from ``--config`` YAML and CLI flags.

    Args:
        types: the dataclasses, e.g. ``(LGRPOArguments, EvalArguments, GRPOConfig, ModelConfig)``.
        argv: command-line arguments without the program name.
        default_config: YAML used when ``argv`` has no ``--config``.

    Raises:
        ValueError: unknown keys in the YAML or on the command line (with suggestions).
    """
    import yaml
    from trl import TrlParser

    argv = list(argv)
    if "--config" not in argv and default_config is not None:
        argv = ["--config", str(default_config), *argv]
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
        if not isinstance(config, dict):
            raise ValueError(f"{path}: a recipe config must be a YAML mapping of settings")
        unknown = [k for k in config if k not in valid_keys(types)]
        if unknown:
            raise unknown_key_error(unknown, valid_keys(types), path)
    *parsed, rest = TrlParser(list(types)).parse_args_and_config(args=argv, return_remaining_strings=True)
    if rest:
        flags = [s.lstrip("-").split("=")[0] for s in rest if s.startswith("--")]
        raise unknown_key_error(flags or list(rest), valid_keys(types), "the command line")
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():  # the config's `env:` may set it after torch was imported
        import torch

        torch.set_num_threads(int(threads))
    return tuple(parsed)


def parse_recipe_args(recipe_type: type, argv: Sequence[str], default_config: str | None = None) -> tuple:
    """Parse ``(recipe_type, EvalArguments, GRPOConfig, ModelConfig)`` for an RL recipe (see ``parse_config``).

    Args:
        recipe_type: ``LGRPOArguments`` or ``TLDRArguments``: a key of the other recipe is unknown.
    """
    from trl import GRPOConfig, ModelConfig

    from effreason.evaluation.posttrain import EvalArguments

    return parse_config((recipe_type, EvalArguments, GRPOConfig, ModelConfig), argv, default_config)


def command_line_keys(argv: Sequence[str]) -> set[str]:
    """The setting names given as ``--key value`` / ``--key=value`` in ``argv`` (``--config`` excluded).

    ``TrlParser`` merges YAML and command line into one object; the recipes need to know which values the
    user typed, because the command line wins over a stage's block of the YAML.
    """
    keys = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--") and len(a) > 2}
    keys |= {k[3:] for k in keys if k.startswith("no_")}  # HfArgumentParser's --no_<flag> for a true default
    return keys - {"config"}
