"""Recipe configuration: TRL's ``GRPOConfig`` and ``ModelConfig`` plus effreason's recipe arguments.

``recipes/lgrpo.py`` parses ``LGRPOArguments``, ``recipes/tldr.py`` ``TLDRArguments`` (both share
``TrainingDataArguments``), each with ``effreason.evaluation.posttrain.EvalArguments``.

A recipe reads ``--config file.yaml`` (TRL's ``TrlParser``: the YAML sets defaults, the command line
overrides them, ``env:`` sets environment variables). Keys that belong to no dataclass are an error
that names the key and the closest valid names, so a typo never silently falls back to a default; a
value of the wrong type (``learning_rate: fast``, ``max_steps: ten``, a choice not offered), in the
YAML or its ``stage1:`` / ``stage2:`` blocks, is an error naming the file and key and the expected
type, and a bad flag names the flag: one line each instead of argparse's usage of every TRL option.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

STAGE_CHOICES = ("1", "2", "both")
#: LGRPOArguments' per-stage blocks of settings, whose values are checked like the top level's
STAGE_BLOCKS = ("stage1", "stage2")


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


def _expected(action: argparse.Action) -> str:
    if action.choices is not None:
        return "one of " + ", ".join(str(c) for c in action.choices)
    kind = getattr(action.type, "__name__", "")
    return {"float": "a number", "int": "an integer", "string_to_bool": "true or false",
            "dict": "a mapping"}.get(kind, kind)


def _value_problem(action: argparse.Action, value: Any) -> str | None:
    """Why a YAML value does not fit an ``HfArgumentParser`` option, or None if it does.

    argparse converts a string default with the option's type, but passes any other value through
    unchecked (a list for a float, ``true`` for an int); only numbers, booleans, mappings and choices are
    checked here: text fields take what they are given, as before.
    """
    convert = action.type
    kind = getattr(convert, "__name__", "")
    items = value if isinstance(value, list) and action.nargs in ("+", "*") else [value]
    for item in items:
        if item is None:
            continue
        if isinstance(item, str) and convert is not None and kind != "dict":
            try:
                item = convert(item)
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                return f"expected {_expected(action)}, got {item!r}"
        elif kind == "float":
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                return f"expected a number, got {item!r}"
        elif kind == "int":
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not float(item).is_integer():
                return f"expected an integer, got {item!r}"
        elif kind == "string_to_bool":
            if not isinstance(item, bool) and item not in (0, 1):
                return f"expected true or false, got {item!r}"
        elif kind == "dict" and not isinstance(item, dict):
            return f"expected a mapping, got {item!r}"
        if action.choices is not None and item not in action.choices:
            return f"expected {_expected(action)}, got {item!r}"
    return None


def check_value_types(parser: argparse.ArgumentParser, settings: Mapping[str, Any], where: str) -> None:
    """Reject a setting whose value does not fit its option's type (unknown keys are not checked here).

    Raises:
        UserError: ``<where>: <key>: expected <type>, got <value>`` (e.g. ``lgrpo.yaml: learning_rate:
            expected a number, got 'fast'``).
    """
    from effreason.errors import UserError

    actions = {}
    for action in parser._actions:  # the typed action wins over a flag's --no_<name> twin
        if action.dest not in actions or actions[action.dest].type is None:
            actions[action.dest] = action
    for key, value in settings.items():
        action = actions.get(key)
        problem = None if action is None else _value_problem(action, value)
        if problem:
            raise UserError(f"{where}: {key}: {problem}")


def read_config(path: str) -> dict:
    """A recipe YAML as a mapping; a syntax error names the file, line and column.

    Raises:
        UserError: not valid YAML, or not a mapping.
        OSError: the file cannot be read (missing, a folder, permissions).
    """
    import yaml

    from effreason.errors import UserError

    with open(path, encoding="utf-8") as f:
        try:
            config = yaml.safe_load(f)
        except UnicodeDecodeError:
            raise UserError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
        except yaml.YAMLError as e:
            mark, context = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else path
            detail = [f"column {mark.column + 1}"] if mark is not None else []
            if context is not None and getattr(e, "context", None):
                detail.append(f"{e.context} from line {context.line + 1}")
            raise UserError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}"
                            + (f" ({'; '.join(detail)})" if detail else "")) from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: a recipe config must be a YAML mapping of settings")
    return config


def parse_config(types: Sequence[type], argv: Sequence[str], default_config: str | None = None) -> tuple:
    """Parse one instance of each dataclass in ``types`` from ``--config`` YAML and CLI flags.

    Args:
        types: the dataclasses, e.g. ``(LGRPOArguments, EvalArguments, GRPOConfig, ModelConfig)``.
        argv: command-line arguments without the program name.
        default_config: YAML used when ``argv`` has no ``--config``.

    Raises:
        ValueError: unknown keys in the YAML or on the command line (with suggestions), values of the
            wrong type (naming the file or flag, and the key), and the dataclasses' own checks (prefixed
            with the config file).
    """
    from trl import TrlParser

    from effreason.errors import UserError

    class RecipeParser(TrlParser):
        # argparse's error() prints the usage of every option (~200 lines) and exits: raise a one-line
        # error instead (argparse has no other hook for it)
        def error(self, message: str):
            raise UserError(f"the command line: {message}")

    argv = list(argv)
    if "--config" not in argv and default_config is not None:
        argv = ["--config", str(default_config), *argv]
    parser = RecipeParser(list(types), allow_abbrev=False)  # `--num_problem` is a typo, not `--num_problems`
    path = None
    if "--config" in argv:
        if argv.index("--config") + 1 == len(argv):
            raise UserError("--config needs a YAML file")
        path = argv[argv.index("--config") + 1]
        config = read_config(path)
        unknown = [k for k in config if k not in valid_keys(types)]
        if unknown:
            raise unknown_key_error(unknown, valid_keys(types), path)
        check_value_types(parser, {k: v for k, v in config.items() if k != "env"}, path)
        for block in STAGE_BLOCKS:
            if isinstance(config.get(block), dict):
                check_value_types(parser, config[block], f"{path}: {block}")
    try:
        *parsed, rest = parser.parse_args_and_config(args=argv, return_remaining_strings=True)
    except UserError:
        raise
    except ValueError as e:  # a dataclass's own check: name where the settings came from
        where = path if not command_line_keys(argv) else f"{path} or the command line" if path else "the command line"
        raise UserError(f"{where}: {e}") from e
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
