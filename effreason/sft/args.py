"""Configuration of ``recipes/sft.py``: TRL's ``SFTConfig`` and ``ModelConfig`` plus ``SFTRecipeArguments``
and the shared ``effreason.evaluation.posttrain.EvalArguments``.

``--config file.yaml`` (TRL's ``TrlParser``: the YAML sets defaults, the command line overrides
them, ``env:`` sets environment variables). A key that belongs to no dataclass is an error naming it
and its closest valid spellings (``effreason.training.args.unknown_key_error``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from effreason.lab.traces import STYLES

VARIANTS = ("unpruned", "pir", "random")
SEGMENTERS = ("auto", "lab", "paragraph")


@dataclass
class SFTRecipeArguments:
    """What effreason adds to TRL's SFT configuration (YAML keys at the top level)."""

    traces: str = field(default="lab", metadata={
        "help": "`lab` (write lab traces), or your traces: a JSONL file, a dataset folder (save_to_disk), a "
                "parquet/json/csv file or a Hub dataset id; rows with problem+completion, prompt+completion or "
                "messages, and an `answer` field (the gold answer PIR scores)"})
    traces_split: str = field(default="train", metadata={"help": "split of a traces dataset"})
    traces_subset: str | None = field(default=None, metadata={"help": "configuration of a Hub traces dataset"})
    traces_columns: list[str] | None = field(default=None, metadata={
        "help": "FIELD=COLUMN items: read a trace field (id, problem, prompt, completion, messages, answer) from "
                "another column, e.g. problem=question"})
    traces_skip_bad_rows: bool = field(default=False, metadata={
        "help": "leave out malformed trace rows (each logged) instead of stopping at the first"})
    num_traces: int = field(default=1000, metadata={"help": "lab: traces written (first N train problems); "
                                                    "yours: first N rows (0 = all)"})
    trace_style: str = field(default="verbose", metadata={
        "help": "lab trace style: verbose, concise, slippy (verbose, plus slips that its final check catches) or "
                "slippy_terse (slippy without step checks)"})
    trace_seed: int = field(default=0, metadata={"help": "lab: seed of the trace writer"})
    lab_slip_warmup_steps: int = field(default=0, metadata={
        "help": "lab only: first SFT the start model this many steps on slippy lab traces (it learns to slip on "
                "wrap-around subtractions and to catch the slip in its final check) and start every variant from "
                "it (`<output_dir>/start_model`, also the PIR scorer); 0 = start from model_name_or_path"})
    lab_warmup_learning_rate: float = field(default=1e-3, metadata={
        "help": "peak rate of that warm-up (50 warm-up steps, cosine decay)"})
    variants: list[str] = field(default_factory=lambda: list(VARIANTS), metadata={
        "help": "training sets, each trained from the same start: unpruned, pir, random"})
    prune_ratio: float = field(default=0.5, metadata={"help": "share of each trace's functional steps to remove"})
    prune_scorer: str | None = field(default=None, metadata={
        "help": "causal LM that scores PIR (default: model_name_or_path, the model being fine-tuned)"})
    segmenter: str = field(default="auto", metadata={"help": "step segmenter: lab, paragraph, or auto (lab for "
                                                     "lab traces, else paragraph)"})
    prune_markers: str | None = field(default=None, metadata={
        "help": "YAML/JSON file of marker phrases per functional kind (default: the built-in English lists)"})
    answer_prefix: str | None = field(default=None, metadata={
        "help": "fixed text between </think> and the gold answer when scoring PIR (default: the trace's own)"})
    prune_max_batch_tokens: int = field(default=16384, metadata={"help": "tokens per PIR scoring pass"})
    instruction: str | None = field(default=None, metadata={
        "help": "text appended to every problem in training and eval prompts; `math` = the boxed-answer "
                "instruction"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message of every training prompt"})
    eval_start: bool = field(default=True, metadata={"help": "also evaluate the start model"})
    data_dir: str | None = field(default=None, metadata={"help": "offline benchmark copies for the eval"})

    def __post_init__(self) -> None:
        if isinstance(self.variants, str):
            self.variants = [v.strip() for v in self.variants.split(",") if v.strip()]
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"variants must be a non-empty list drawn from {list(VARIANTS)}, got {self.variants}")
        if not 0.0 <= self.prune_ratio <= 1.0:
            raise ValueError(f"prune_ratio must be in [0, 1] (share of functional steps), got {self.prune_ratio}")
        if self.segmenter not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {list(SEGMENTERS)}, got {self.segmenter!r}")
        if self.trace_style not in STYLES:
            raise ValueError(f"trace_style must be one of {list(STYLES)}, got {self.trace_style!r}")
        if self.num_traces < 0:
            raise ValueError(f"num_traces must be >= 0 (0 = every row of a JSONL), got {self.num_traces}")
        if self.lab_slip_warmup_steps < 0:
            raise ValueError(f"lab_slip_warmup_steps must be >= 0, got {self.lab_slip_warmup_steps}")
        if self.lab_slip_warmup_steps and self.traces != "lab":
            raise ValueError("lab_slip_warmup_steps warms up a lab model on lab traces; it needs traces: lab "
                             f"(got traces: {self.traces!r}); set it to 0 for your own traces")
        if isinstance(self.traces_columns, str):
            self.traces_columns = self.traces_columns.split()
        from effreason.pruning.prune import TRACE_FIELDS
        from effreason.sources import parse_field_map

        parse_field_map(self.traces_columns, TRACE_FIELDS)  # a malformed item fails here, before any work
        if self.prune_markers:
            from effreason.pruning.classify import load_marker_config

            load_marker_config(self.prune_markers)  # likewise a bad marker file
        if self.traces == "lab" and self.num_traces == 0:
            raise ValueError("traces: lab needs num_traces >= 1 (how many lab traces to write)")

    def resolved_segmenter(self) -> str:
        """``lab`` for lab traces, ``paragraph`` otherwise, unless set."""
        if self.segmenter != "auto":
            return self.segmenter
        return "lab" if self.traces == "lab" else "paragraph"


def parse_sft_args(argv: Sequence[str], default_config: str | None = None) -> tuple[Any, Any, Any, Any]:
    """Parse ``(SFTRecipeArguments, EvalArguments, SFTConfig, ModelConfig)`` from ``--config`` YAML and CLI flags.

    Raises:
        ValueError: unknown keys in the YAML or on the command line (with suggestions).
    """
    from trl import ModelConfig, SFTConfig

    from effreason.evaluation.posttrain import EvalArguments
    from effreason.training.args import parse_config

    return parse_config((SFTRecipeArguments, EvalArguments, SFTConfig, ModelConfig), argv, default_config)
