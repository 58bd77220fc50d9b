"""Configuration of ``recipes/lora_adapter.py``: TRL's ``SFTConfig`` (stage 1) and ``ModelConfig`` (the base
model and the LoRA settings), ``LoRAAdapterArguments`` (data, buckets, the RL block, the router, the
comparison) and the shared ``effreason.evaluation.posttrain.EvalArguments``.

``--config file.yaml`` (TRL's ``TrlParser``: the YAML sets defaults, the command line overrides them, ``env:``
sets environment variables). Top-level TRL keys are the SFT stage's; the RL stage's ``GRPOConfig`` settings go
in the ``rl:`` block (unknown keys there are an error naming the closest valid ones). A key that belongs to no
dataclass is an error naming it and its closest valid spellings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STAGES = ("sft", "rl", "router", "eval")


def _default_buckets() -> dict:
    return {"short": {"tokens": 64}, "medium": {"tokens": 128}, "long": {"tokens": 256}}


@dataclass
class LoRAAdapterArguments:
    """What effreason adds to TRL's SFT and GRPO configurations for the reasoning adapter (YAML top level)."""

    traces: str = field(default="lab", metadata={
        "help": "`lab` (write lab traces of lab_mixed's training problems), or your reasoning traces: a JSONL file, a "
                "dataset folder, a parquet/json/csv file or a Hub dataset id, rows with problem+completion, "
                "prompt+completion or messages, and `answer`"})
    traces_split: str = field(default="train", metadata={"help": "split of a traces dataset"})
    traces_subset: str | None = field(default=None, metadata={"help": "configuration of a Hub traces dataset"})
    traces_columns: list[str] | None = field(default=None, metadata={
        "help": "FIELD=COLUMN items: read a trace field from another column, e.g. problem=question"})
    num_traces: int = field(default=12800, metadata={"help": "SFT traces: lab traces written, or your first N rows "
                                                     "(0 = all)"})
    trace_seed: int = field(default=0, metadata={"help": "seed of the lab trace writer and the bucket labels"})
    verbose_share: float = field(default=0.8, metadata={
        "help": "lab: share of verbose (overthinking) traces among the unlabelled SFT rows"})
    bucket_share: float = field(default=0.5, metadata={
        "help": "share of SFT rows whose prompt carries the instruction of the smallest bucket their thinking fits "
                "(hindsight labels; effreason.adapters.data)"})
    buckets: dict = field(default_factory=_default_buckets, metadata={
        "help": "length buckets: name -> {tokens (thinking tokens), instruction (default 'think for N tokens'), "
                "penalty (the RL reward's weight on leaving the bucket), floor (optional: the RL reward also "
                "penalises thinking shorter than this)}"})
    instruction: str | None = field(default=None, metadata={
        "help": "text appended to every problem (training, router and eval); `math` = the boxed-answer instruction"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message of every prompt"})
    data_dir: str | None = field(default=None, metadata={
        "help": "offline benchmark copies (<dir>/<name>/<split>.jsonl) for RL prompts, router problems and eval"})
    # --- stage 2: RL on the adapter
    rl: dict = field(default_factory=dict, metadata={
        "help": "GRPOConfig settings of the RL stage (num_generations, max_completion_length, learning_rate, "
                "max_steps, use_vllm, vllm_mode, temperature, loss_type, ...); max_steps: 0 skips RL"})
    rl_dataset: str = field(default="lab_mixed", metadata={"help": "RL prompts: a benchmark name or a JSONL file"})
    rl_dataset_split: str = field(default="train", metadata={"help": "split of the RL benchmark"})
    rl_dataset_limit: int | None = field(default=None, metadata={"help": "first N RL problems only"})
    reward_mode: str = field(default="math", metadata={"help": "grading of the RL reward: math or exact (lab)"})
    vllm_dtype: str | None = field(default=None, metadata={
        "help": "dtype of the colocated vLLM engine in RL (on CPU vLLM would use bfloat16)"})
    # --- stage 3: the router
    router_dataset: str = field(default="lab_mixed", metadata={"help": "router problems: a benchmark name"})
    router_split: str = field(default="train", metadata={"help": "split of the router benchmark"})
    router_calibration_split: str | None = field(default="calibration", metadata={
        "help": "split the threshold is calibrated on (none: the router split's problems after the training ones)"})
    router_problems: int = field(default=3000, metadata={"help": "problems the router is trained on"})
    router_calibration_problems: int = field(default=2000, metadata={
        "help": "problems its threshold is chosen on (disjoint from the training ones)"})
    router_layers: list[str] = field(default_factory=lambda: ["1/2", "last"], metadata={
        "help": "base-model layers the router reads at the last prompt token: indices, fractions of the depth "
                "('1/2') or 'last'"})
    router_target_accuracy: float = field(default=0.95, metadata={
        "help": "accuracy the base must keep on the queries routed to it (calibration lower bound)"})
    router_confidence: float = field(default=0.9, metadata={
        "help": "one-sided confidence of that lower bound (Wilson); 0 = the plain calibration accuracy"})
    router_max_new_tokens: int = field(default=32, metadata={
        "help": "completion cap of the base model's own answers that label the router's problems"})
    router_batch_size: int = field(default=256, metadata={"help": "batch size of those answers"})
    # --- stage 4: the comparison
    compare_benchmarks: list[str] = field(default_factory=lambda: ["lab_mixed", "lab"], metadata={
        "help": "benchmarks of comparison.json: base, adapter, adapter per bucket, routed (first: the mixed split)"})
    compare_vllm: bool = field(default=True, metadata={
        "help": "with eval_backend hf: also run the routed system on vLLM (one engine, the adapter's LoRARequest on "
                "adapter-routed prompts) on the first benchmark and compare its greedy completions with HF's"})
    compare_vllm_limit: int | None = field(default=None, metadata={
        "help": "that vLLM check on the first N problems only (None: all of them)"})
    compare_sft: bool = field(default=True, metadata={
        "help": "also evaluate the SFT adapter before RL, unbucketed and per bucket, on the last benchmark (what RL "
                "changed)"})
    stages: list[str] = field(default_factory=lambda: list(STAGES), metadata={
        "help": "stages to run: sft, rl, router, eval (a finished stage is reused)"})

    def __post_init__(self) -> None:
        from effreason.adapters.buckets import parse_buckets

        parse_buckets(self.buckets)
        if isinstance(self.stages, str):
            self.stages = [s.strip() for s in self.stages.split(",") if s.strip()]
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(f"stages must be drawn from {list(STAGES)}, got {self.stages}")
        for key in ("verbose_share", "bucket_share"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {getattr(self, key)}")
        if not 0 < self.router_target_accuracy <= 1 or not 0 <= self.router_confidence < 1:
            raise ValueError(f"router_target_accuracy must be in (0, 1] and router_confidence in [0, 1), got "
                             f"{self.router_target_accuracy}, {self.router_confidence}")
        if self.compare_vllm_limit is not None and self.compare_vllm_limit < 1:
            raise ValueError(f"compare_vllm_limit must be >= 1 (or null for all problems), got {self.compare_vllm_limit}")
        for key in ("router_problems", "router_calibration_problems", "router_max_new_tokens", "router_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.num_traces < 0:
            raise ValueError(f"num_traces must be >= 0 (0 = every row of your traces), got {self.num_traces}")
        if self.reward_mode not in ("math", "exact"):
            raise ValueError(f"reward_mode must be math or exact, got {self.reward_mode!r}")
        self.router_layers = [int(x) if isinstance(x, int) or (isinstance(x, str) and x.lstrip("-").isdigit()) else x
                              for x in self.router_layers]
        if isinstance(self.router_calibration_split, str) and self.router_calibration_split.lower() in ("none", ""):
            self.router_calibration_split = None
        if isinstance(self.traces_columns, str):
            self.traces_columns = self.traces_columns.split()
        if not isinstance(self.rl, dict):
            raise ValueError(f"rl must be a mapping of GRPOConfig settings, got {self.rl!r}")
        from effreason.benchmarks import BENCHMARKS

        unknown = [b for b in [self.router_dataset, *self.compare_benchmarks] if b not in BENCHMARKS]
        if unknown:
            raise ValueError(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")


def rl_config(rl: dict, sft_args: Any, output_dir: str) -> Any:
    """The RL stage's ``GRPOConfig``: the SFT stage's run settings (seed, device, precision, logging, tracking)
    under the ``rl:`` block, in ``output_dir``.

    Raises:
        ValueError: an unknown key in ``rl:`` (with the closest valid ones) or a value GRPOConfig refuses.
    """
    from dataclasses import fields

    from trl import GRPOConfig

    from effreason.training.args import check_overrides

    check_overrides("rl", rl, [GRPOConfig])
    shared = ("seed", "use_cpu", "bf16", "fp16", "report_to", "logging_steps", "save_total_limit", "data_seed")
    names = {f.name for f in fields(GRPOConfig)}
    base = {k: getattr(sft_args, k) for k in shared if k in names and hasattr(sft_args, k)}
    run_name = f"{sft_args.run_name}-rl" if getattr(sft_args, "run_name", None) else None
    try:
        return GRPOConfig(**{**base, "run_name": run_name, **rl, "output_dir": output_dir})
    except (TypeError, ValueError) as e:
        raise ValueError(f"rl: {e}") from e
