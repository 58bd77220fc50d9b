"""PIR trace pruning (LIMOPro, arXiv 2505.19187): segment, classify, score, prune."""

from effreason.pruning.bench import time_pir_scoring
from effreason.pruning.classify import (
    ERROR_CORRECTION,
    FUNCTIONAL_LABELS,
    MULTI_METHOD,
    PROGRESSIVE,
    VERIFICATION,
    MarkerClassifier,
    MarkerConfig,
    StepClassifier,
    is_functional,
    load_marker_config,
)
from effreason.pruning.nll import answer_nll, shared_prefix_nll
from effreason.pruning.pir import (
    Ablations,
    ParsedTrace,
    ablation_sequences,
    parse_trace,
    pir_scores,
    scored_answer,
)
from effreason.pruning.prune import (
    PrunedTrace,
    StepRecord,
    load_traces,
    num_to_remove,
    prune_to_jsonl,
    prune_trace,
    prune_traces,
    save_pruned_dataset,
    summarize,
)
from effreason.pruning.segment import LabSegmenter, ParagraphSegmenter, Segmenter

__all__ = [
    "Ablations", "ablation_sequences", "scored_answer", "shared_prefix_nll",
    "ERROR_CORRECTION", "FUNCTIONAL_LABELS", "MULTI_METHOD", "PROGRESSIVE", "VERIFICATION",
    "LabSegmenter", "MarkerClassifier", "MarkerConfig", "ParagraphSegmenter", "ParsedTrace",
    "PrunedTrace", "Segmenter", "StepClassifier", "StepRecord", "answer_nll", "is_functional",
    "load_marker_config", "load_traces", "num_to_remove", "parse_trace", "pir_scores", "prune_to_jsonl",
    "prune_trace", "prune_traces", "save_pruned_dataset", "summarize", "time_pir_scoring",
]
