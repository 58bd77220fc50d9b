"""Evaluate trained models after a training recipe, and compare them with the start model.

Every training recipe (``recipes/lgrpo.py``, ``tldr.py``, ``sft.py``) takes the same ``eval_*``
settings (``EvalArguments``), evaluates each model with the eval suite into ``<output_dir>/eval/<name>``
(resumable) and writes ``comparison.md`` / ``.json`` / ``.png`` next to them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from effreason.jsonl import atomic_write, write_json

logger = logging.getLogger(__name__)


@dataclass
class EvalArguments:
    """The post-training evaluation of a recipe (YAML keys at the top level)."""

    eval_benchmark: str | None = field(default="lab", metadata={
        "help": "benchmark evaluated before and after training (none: skip)"})
    eval_split: str = field(default="test", metadata={"help": "split of the eval benchmark"})
    eval_limit: int | None = field(default=None, metadata={"help": "first N eval problems only"})
    eval_max_new_tokens: int | None = field(default=None, metadata={"help": "eval completion cap"})
    eval_batch_size: int | None = field(default=None, metadata={"help": "eval generation batch size"})
    eval_backend: str = field(default="hf", metadata={"help": "eval backend: hf or vllm"})
    eval_budgets: list[int] = field(default_factory=list, metadata={
        "help": "also evaluate each model with these thinking budgets (tokens, s1-style forcing)"})
    eval_methods: dict = field(default_factory=dict, metadata={
        "help": "generation-method settings by method name, e.g. {budget_forcing: {budgets: [64, 128]}}, "
                "{thinking_stop: {alpha: 2.0}}, {s1: {thinking_budget: 64}}, {short_m_at_k: {m: 3}} "
                "(the eval CLI sets them with each method's flags)"})
    eval_samples: int = field(default=1, metadata={"help": "samples per problem (short-m@k and first-finish: k)"})
    eval_temperature: float = field(default=0.0, metadata={"help": "eval sampling temperature (0 = greedy)"})

    def __post_init__(self) -> None:
        if isinstance(self.eval_benchmark, str) and self.eval_benchmark.lower() in ("none", ""):
            self.eval_benchmark = None
        from effreason.benchmarks import BENCHMARKS

        # checked now: the eval runs after training, hours later
        if self.eval_benchmark is not None and self.eval_benchmark not in BENCHMARKS:
            raise ValueError(f"eval_benchmark: unknown benchmark {self.eval_benchmark!r}; known: "
                             f"{', '.join(BENCHMARKS)}, or none (no eval)")
        if self.eval_backend not in ("hf", "vllm"):
            raise ValueError(f"eval_backend must be hf or vllm, got {self.eval_backend!r}")
        for key in ("eval_limit", "eval_max_new_tokens", "eval_batch_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or unset), got {getattr(self, key)}")
        if self.eval_benchmark is not None and (self.eval_methods or self.eval_samples != 1 or self.eval_temperature):
            eval_config(self, "-", "check", "the trained model")  # method names, settings, samples: now


class EvalModel(NamedTuple):
    """One model to evaluate: weights, optional LoRA adapter, optional instruction appended to prompts."""

    model: str
    adapter: str | None = None
    instruction: str | None = None


def eval_config(eval_args: EvalArguments, out_dir: str | Path, name: str, model: str, adapter: str | None = None,
                instruction: str | None = None, data_dir: str | None = None):
    """The ``EvalConfig`` a recipe evaluates ``model`` with (``out_dir/eval/<name>``), validated now."""
    from effreason.evaluation.config import EvalConfig

    extra: dict = {}  # only when set, so a default run builds the same EvalConfig as ever
    if eval_args.eval_budgets:
        extra["budgets"] = list(eval_args.eval_budgets)
    if eval_args.eval_methods:
        extra["methods"] = dict(eval_args.eval_methods)
    if eval_args.eval_samples != 1 or eval_args.eval_temperature != 0.0:
        extra.update(samples=eval_args.eval_samples, temperature=eval_args.eval_temperature)
    return EvalConfig(output=str(Path(out_dir) / "eval" / name), benchmark=eval_args.eval_benchmark,
                      split=eval_args.eval_split, limit=eval_args.eval_limit, data_dir=data_dir,
                      model=model, adapter=adapter, instruction=instruction, backend=eval_args.eval_backend,
                      max_new_tokens=eval_args.eval_max_new_tokens, batch_size=eval_args.eval_batch_size,
                      progress=False, **extra)


def evaluate_model(eval_args: EvalArguments, out_dir: str | Path, name: str, model: str, adapter: str | None = None,
                   instruction: str | None = None, data_dir: str | None = None) -> dict:
    """Evaluate one model on ``eval_args.eval_benchmark`` into ``out_dir/eval/<name>`` and return its results.

    An interrupted evaluation of the same weights and settings resumes; one of other weights or settings
    (``ConfigMismatchError``) is evaluated again from scratch.
    """
    from effreason.evaluation.runner import run_eval
    from effreason.evaluation.store import ConfigMismatchError
    from effreason.models import outside_zero3

    cfg = eval_config(eval_args, out_dir, name, model, adapter, instruction, data_dir)
    with outside_zero3():  # the main process alone, after a ZeRO-3 training: whole weights, no rank sync
        try:
            results = run_eval(cfg)
        except ConfigMismatchError:
            logger.info("%s holds an evaluation of other weights or settings: evaluating again", cfg.output)
            results = run_eval(replace(cfg, overwrite=True))
    logger.info("eval %s: accuracy %.3f, tokens mean %.1f (%s)", name, results["accuracy"],
                results.get("tokens_mean") or float("nan"), cfg.output)
    return results


def write_comparison(out_dir: str | Path, runs: Mapping[str, dict], baseline: str, title: str) -> str:
    """Write ``comparison.md`` / ``.json`` / ``.png`` into ``out_dir``; return the markdown table."""
    from effreason.evaluation.compare import comparison_rows, markdown_table, plot_runs

    out_dir = Path(out_dir)
    rows = comparison_rows(runs, baseline=baseline)
    table = markdown_table(rows)
    with atomic_write(out_dir / "comparison.md") as f:
        f.write(f"# {title}\n\n{table}\n")
    write_json(out_dir / "comparison.json", rows)
    plot_runs(runs, out_dir / "comparison.png", baseline=baseline, title=title)
    logger.info("comparison written to %s", out_dir / "comparison.md")
    return table


def evaluate_and_compare(eval_args: EvalArguments, out_dir: str | Path, models: Mapping[str, EvalModel], *,
                         baseline: str, title: str, data_dir: str | None = None) -> str:
    """Evaluate every model of ``models`` (in order) and write the comparison; return the markdown table.

    Args:
        models: run name -> ``EvalModel``; ``baseline`` names the run the others are compared with.
    """
    runs = {name: evaluate_model(eval_args, out_dir, name, m.model, m.adapter, m.instruction, data_dir=data_dir)
            for name, m in models.items()}
    return write_comparison(out_dir, runs, baseline, title)
