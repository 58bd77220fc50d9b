"""Configuration of ``recipes/steering.py``: ``SteeringArguments`` plus the shared ``EvalArguments``.

``--config file.yaml`` sets defaults, the command line overrides them (``effreason.training.args``);
an unknown key is an error naming its closest valid spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PAIR_SOURCES = ("lab", "jsonl", "self")
GAMMA_RULES = ("measured", "closed_form")


@dataclass
class SteeringArguments:
    """What the steering recipe does (YAML keys at the top level)."""

    model_name_or_path: str = field(default="lab", metadata={"help": "the reasoning model (hub id, path, or lab)"})
    output_dir: str = field(default="runs/steering-lab", metadata={"help": "where everything goes; the vector in "
                                                                    "<output_dir>/steering"})
    dtype: str | None = field(default=None, metadata={"help": "model dtype of pairs=self sampling and the eval "
                                                                 "(default float32 on CPU, bf16 on GPU)"})
    measure_dtype: str = field(default="float32", metadata={
        "help": "dtype of the HF model that extracts the direction, measures Jv, curvature and KL, and runs the sweep "
                "(float32: finite differences and small KLs drown in bf16 rounding)"})
    seed: int = field(default=0, metadata={"help": "seed of the pairs and the samples"})
    instruction: str | None = field(default=None, metadata={"help": "text appended to each problem (`math`: the "
                                                            "boxed-answer instruction)"})
    data_dir: str | None = field(default=None, metadata={"help": "offline benchmark copies"})
    # pairs
    pairs: str = field(default="lab", metadata={
        "help": "where the concise/verbose pairs come from: lab (the lab writers' traces), jsonl (pairs_file), "
                "self (the model's shortest vs longest correct sample per problem)"})
    pairs_file: str | None = field(default=None, metadata={
        "help": "pairs=jsonl: rows {problem, concise, verbose} (id optional)"})
    num_pairs: int = field(default=64, metadata={"help": "pairs used (lab: drawn; jsonl: the first N rows)"})
    pair_benchmark: str = field(default="lab", metadata={"help": "pairs=self: where the problems come from"})
    pair_split: str = field(default="train", metadata={"help": "pairs=self: its split (keep it apart from eval)"})
    pair_problems: int = field(default=200, metadata={"help": "pairs=self: problems sampled"})
    pair_samples: int = field(default=8, metadata={"help": "pairs=self: samples per problem"})
    pair_temperature: float = field(default=0.7, metadata={"help": "pairs=self: sampling temperature"})
    pair_max_new_tokens: int | None = field(default=None, metadata={"help": "pairs=self: sample cap"})
    backend: str = field(default="hf", metadata={"help": "pairs=self sampling: hf or vllm (directions, strengths and "
                                                         "the sweep run on HF)"})
    batch_size: int = field(default=64, metadata={"help": "sequences per HF generate call"})
    # direction and layer
    position: str = field(default="last", metadata={
        "help": "which states are compared: last (the final token, ASC) or mean (mean over the completion)"})
    layers: list[str] = field(default_factory=lambda: ["1/4", "1/2", "3/4", "last"], metadata={
        "help": "candidate layers of the sweep: indices (0 = embeddings, i = after block i), fractions ('1/2') or "
                "'last'"})
    max_batch_tokens: int = field(default=16384, metadata={"help": "tokens per forward pass (extraction, KL)"})
    # strength
    eps: float = field(default=1e-3, metadata={"help": "the KL bound: p95 per-token KL(p || p_steered) <= eps"})
    gamma_rule: str = field(default="measured", metadata={
        "help": "the strength written: measured (largest gamma whose measured p95 KL <= eps) or closed_form "
                "(ASC's bound from a = median ||Jv||, L = p95 curvature)"})
    fd_step: float = field(default=0.01, metadata={"help": "finite-difference step of Jv and curvature, in gamma"})
    # held-out prompts (KL) and the dev sweep
    dev_benchmark: str = field(default="lab", metadata={"help": "held-out problems: KL and the layer sweep"})
    dev_split: str = field(default="dev", metadata={"help": "its split (apart from the pairs and the eval)"})
    kl_problems: int = field(default=32, metadata={"help": "held-out prompts the KL is measured on (the first N)"})
    sweep_problems: int = field(default=100, metadata={"help": "dev problems of the sweep (after the KL ones)"})
    dev_max_new_tokens: int | None = field(default=None, metadata={"help": "cap of the KL completions and the sweep"})
    require_effect: bool = field(default=True, metadata={
        "help": "stop with an error (the sweep in <output_dir>/sweep.json) when no layer and sign lowers the dev "
                "tokens within the accuracy tolerance, rather than write a vector that does nothing"})
    accuracy_tolerance: float = field(default=0.01, metadata={
        "help": "the sweep keeps layers whose dev accuracy is at least the unsteered one minus this"})
    backoff_factor: float = field(default=0.9, metadata={
        "help": "when the chosen strength costs more dev accuracy than the tolerance, multiply it by this, and again"})
    backoff_steps: int = field(default=6, metadata={"help": "most such steps (0: never back off)"})
    # evaluation
    eval_gammas: list[float] = field(default_factory=list, metadata={
        "help": "strengths (in units of the vector, signed) evaluated beside the chosen one and the unsteered model"})
    transfer_benchmark: str | None = field(default=None, metadata={
        "help": "also evaluate the vector on this benchmark (e.g. lab_hard), with and without steering"})

    def __post_init__(self) -> None:
        from effreason.benchmarks import BENCHMARKS

        if isinstance(self.transfer_benchmark, str) and self.transfer_benchmark.lower() in ("", "none"):
            self.transfer_benchmark = None
        for key in ("pair_benchmark", "dev_benchmark", "transfer_benchmark"):
            value = getattr(self, key)
            if value is not None and value not in BENCHMARKS:
                raise ValueError(f"{key}: unknown benchmark {value!r}; known: {', '.join(BENCHMARKS)}")
        if self.pairs not in PAIR_SOURCES:
            raise ValueError(f"pairs must be one of {', '.join(PAIR_SOURCES)}, got {self.pairs!r}")
        if self.pairs == "jsonl" and not self.pairs_file:
            raise ValueError("pairs=jsonl needs pairs_file (rows {problem, concise, verbose})")
        if self.pairs != "jsonl" and self.pairs_file:
            raise ValueError(f"pairs_file is read only with pairs=jsonl (pairs is {self.pairs!r})")
        if self.pairs == "lab" and self.model_name_or_path != "lab":
            raise ValueError("pairs=lab are lab traces; for another model use pairs=jsonl or pairs=self")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be hf or vllm, got {self.backend!r}")
        if self.position not in ("last", "mean"):
            raise ValueError(f"position must be last or mean, got {self.position!r}")
        if self.measure_dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ValueError(f"measure_dtype must be float32, bfloat16, float16 or float64, got {self.measure_dtype!r}")
        if self.gamma_rule not in GAMMA_RULES:
            raise ValueError(f"gamma_rule must be one of {', '.join(GAMMA_RULES)}, got {self.gamma_rule!r}")
        for key in ("num_pairs", "pair_problems", "pair_samples", "batch_size", "max_batch_tokens", "kl_problems",
                    "sweep_problems"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.pairs == "self" and (self.pair_samples < 2 or self.pair_temperature <= 0):
            raise ValueError("pairs=self needs pair_samples >= 2 and pair_temperature > 0 (it compares samples)")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if not self.fd_step > 0:
            raise ValueError(f"fd_step must be > 0, got {self.fd_step}")
        if not 0 < self.backoff_factor < 1 or self.backoff_steps < 0:
            raise ValueError(f"backoff_factor must be in (0, 1) and backoff_steps >= 0, got {self.backoff_factor}, "
                             f"{self.backoff_steps}")
        if not 0 <= self.accuracy_tolerance < 1:
            raise ValueError(f"accuracy_tolerance must be in [0, 1), got {self.accuracy_tolerance}")
        if not self.layers:
            raise ValueError("layers: give at least one candidate layer")
        self.layers = [int(x) if isinstance(x, int) or (isinstance(x, str) and x.lstrip("-").isdigit()) else x
                       for x in self.layers]

    def settings(self) -> dict:
        """What shapes the vector (a resumed run must match them; the eval settings may change)."""
        skip = {"output_dir", "eval_gammas", "transfer_benchmark", "batch_size", "require_effect"}
        return {k: v for k, v in vars(self).items() if k not in skip}


def parse_steering_args(argv: Sequence[str], default_config: str | None = None) -> tuple[Any, Any]:
    """``(SteeringArguments, EvalArguments)`` from ``--config`` YAML and command-line flags."""
    from effreason.evaluation.posttrain import EvalArguments
    from effreason.training.args import parse_config

    return parse_config((SteeringArguments, EvalArguments), argv, default_config)
