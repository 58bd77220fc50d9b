"""Configuration of ``recipes/early_exit.py``: ``EarlyExitArguments`` plus the shared ``EvalArguments``.

``--config file.yaml`` sets defaults, the command line overrides them (``effreason.training.args``);
an unknown key is an error naming its closest valid spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from effreason.early_exit.cues import DEFAULT_CUES

#: Feature layers: about 1/3 and 2/3 of the depth and the last (LYNX reads 9, 16 and 28 of a 28-layer model).
DEFAULT_LAYERS = ("1/3", "2/3", "last")


@dataclass
class EarlyExitArguments:
    """What the early-exit recipe does (YAML keys at the top level)."""

    model_name_or_path: str = field(default="lab", metadata={"help": "the reasoning model (hub id, path, or lab)"})
    output_dir: str = field(default="runs/early-exit-lab", metadata={"help": "where everything goes; the probe in "
                                                                      "<output_dir>/probe"})
    dtype: str | None = field(default=None, metadata={"help": "model dtype (default float32 on CPU)"})
    seed: int = field(default=0, metadata={"help": "seed of sampling, splits and probe training"})
    lab_reverify_warmup_steps: int = field(default=0, metadata={
        "help": "lab only: first SFT the lab model this many steps on re-verifying traces (a few step checks, then "
                "three cued re-checks of the whole chain once it has the answer) and use that model throughout "
                "(`<output_dir>/start_model`); 0 = use model_name_or_path as it is"})
    lab_warmup_learning_rate: float = field(default=1e-3, metadata={"help": "peak rate of that warm-up"})
    # rollouts
    benchmark: str = field(default="lab", metadata={"help": "where the training problems come from"})
    split: str = field(default="train", metadata={"help": "its split (keep it apart from the eval split)"})
    data_dir: str | None = field(default=None, metadata={"help": "offline benchmark copies"})
    instruction: str | None = field(default=None, metadata={"help": "text appended to each problem (`math`: the "
                                                            "boxed-answer instruction)"})
    num_problems: int = field(default=800, metadata={"help": "training problems (first N of the split)"})
    rollouts_file: str | None = field(default=None, metadata={
        "help": "your traces instead of sampling: JSONL rows with `id`, `problem`, `completion` and the gold "
                "`answer` (the benchmark is then not used); each completion is tokenised once, whole, after the "
                "problem's prompt"})
    samples_per_problem: int = field(default=2, metadata={"help": "rollouts per problem"})
    temperature: float = field(default=0.7, metadata={"help": "rollout sampling temperature"})
    top_p: float = field(default=1.0, metadata={"help": "rollout nucleus sampling"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "rollout cap (default: the benchmark's)"})
    backend: str = field(default="hf", metadata={"help": "rollouts and labels: hf or vllm (features: HF)"})
    batch_size: int = field(default=64, metadata={"help": "sequences per HF generate call"})
    # events and labels
    cues: list[str] = field(default_factory=lambda: list(DEFAULT_CUES), metadata={
        "help": "cue words (whole words, case-insensitive, in the thinking only)"})
    answer_prefix: str | None = field(default=None, metadata={
        "help": "the exit string is </think> + this lead-in (default: the benchmark's answer prefix)"})
    answer_tokens: int = field(default=16, metadata={"help": "tokens decoded greedily after the exit string"})
    # features and probe
    layers: list[str] = field(default_factory=lambda: list(DEFAULT_LAYERS), metadata={
        "help": "hidden-state layers: indices (0 = embeddings, i = after block i), fractions of the depth ('1/3') "
                "or 'last'"})
    feature_max_batch_tokens: int = field(default=16384, metadata={"help": "tokens per feature forward pass"})
    train_fraction: float = field(default=0.5, metadata={
        "help": "share of problems whose events train the probe; the rest calibrate it (disjoint, by problem)"})
    validation_fraction: float = field(default=0.15, metadata={
        "help": "share of the training problems held out for early stopping"})
    probe_learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the probe"})
    probe_epochs: int = field(default=200, metadata={"help": "most epochs"})
    probe_patience: int = field(default=10, metadata={"help": "epochs without validation improvement before stopping"})
    # calibration and checks
    deltas: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.2], metadata={
        "help": "deltas the probe is calibrated for (thresholds stored for each)"})
    bound_splits: int = field(default=50, metadata={"help": "random calibration/test splits of the bound check"})
    eval_deltas: list[float] = field(default_factory=lambda: [0.05, 0.1], metadata={
        "help": "deltas evaluated with the eval suite (each one of `deltas`), beside the model without exit"})
    transfer_benchmark: str | None = field(default=None, metadata={
        "help": "also evaluate the probe on this benchmark (e.g. lab_hard), with and without exit"})

    def __post_init__(self) -> None:
        from effreason.benchmarks import BENCHMARKS

        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark: unknown {self.benchmark!r}; known: {', '.join(BENCHMARKS)}")
        if isinstance(self.transfer_benchmark, str) and self.transfer_benchmark.lower() in ("", "none"):
            self.transfer_benchmark = None
        if self.transfer_benchmark is not None and self.transfer_benchmark not in BENCHMARKS:
            raise ValueError(f"transfer_benchmark: unknown {self.transfer_benchmark!r}; known: {', '.join(BENCHMARKS)}")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be hf or vllm, got {self.backend!r}")
        for key in ("num_problems", "samples_per_problem", "answer_tokens", "batch_size", "probe_epochs",
                    "probe_patience", "bound_splits", "feature_max_batch_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lab_reverify_warmup_steps < 0:
            raise ValueError(f"lab_reverify_warmup_steps must be >= 0, got {self.lab_reverify_warmup_steps}")
        if self.lab_reverify_warmup_steps and self.model_name_or_path != "lab":
            raise ValueError("lab_reverify_warmup_steps warms up the lab model; set it to 0 for model_name_or_path "
                             f"{self.model_name_or_path!r}")
        if self.samples_per_problem > 1 and self.temperature <= 0:
            raise ValueError("samples_per_problem > 1 needs temperature > 0 (greedy samples are identical)")
        for key in ("train_fraction", "validation_fraction"):
            if not 0 < getattr(self, key) < 1:
                raise ValueError(f"{key} must be in (0, 1), got {getattr(self, key)}")
        if not self.deltas or any(not 0 < d < 1 for d in self.deltas):
            raise ValueError(f"deltas must be values in (0, 1), got {self.deltas}")
        missing = [d for d in self.eval_deltas if d not in self.deltas]
        if missing:
            raise ValueError(f"eval_deltas {missing} are not among deltas {self.deltas}: the probe is calibrated only "
                             "for those")
        from effreason.early_exit.cues import cue_pattern

        cue_pattern(self.cues)  # empty cues fail now
        self.layers = [int(x) if isinstance(x, int) or (isinstance(x, str) and x.lstrip("-").isdigit()) else x
                       for x in self.layers]

    def settings(self) -> dict:
        """What shapes the rollouts, labels, features and probe (a resumed run must match them)."""
        keep = ("model_name_or_path", "lab_reverify_warmup_steps", "lab_warmup_learning_rate", "dtype", "seed", "benchmark", "split", "data_dir", "instruction", "num_problems",
                "rollouts_file", "samples_per_problem", "temperature", "top_p", "max_new_tokens", "backend", "batch_size", "cues",
                "answer_prefix", "answer_tokens", "layers", "train_fraction", "validation_fraction",
                "probe_learning_rate", "probe_epochs", "probe_patience", "deltas")
        return {k: getattr(self, k) for k in keep}


def parse_early_exit_args(argv: Sequence[str], default_config: str | None = None) -> tuple[Any, Any]:
    """``(EarlyExitArguments, EvalArguments)`` from ``--config`` YAML and command-line flags."""
    from effreason.evaluation.posttrain import EvalArguments
    from effreason.training.args import parse_config

    return parse_config((EarlyExitArguments, EvalArguments), argv, default_config)
