"""What every generation backend returns, and the capabilities a backend declares."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


@dataclass
class Generation:
    """One sampled completion.

    Attributes:
        text: decoded completion (special tokens removed, thinking markers kept).
        num_tokens: generated tokens, up to and including the end-of-sequence token.
        finished: whether the model ended by itself (False = cut at ``max_new_tokens``).
        token_ids: the generated ids, ``num_tokens`` of them (empty when a backend did not keep them).
    """

    text: str
    num_tokens: int
    finished: bool
    token_ids: list[int] = field(default_factory=list)


class Capability(StrEnum):
    """Something a generation-time method may need from a backend (see ``effreason/generation/README.md``).

    Attributes:
        CONTINUE_FROM_IDS: ``generate`` continues from any token ids (cut, force, continue).
        LOGITS_PROCESSORS: per-step logits changes through transformers ``LogitsProcessor`` objects
            (``GenerationHooks.logits_processors``).
        RESIDUAL_HOOKS: the method may wrap the torch model and hook its layers (steering vectors).
        HIDDEN_STATES: the method may read hidden states at chosen positions (early-exit probes).
        PER_PROMPT_ADAPTER: ``generate(..., adapters=[...])`` runs each prompt with the run's adapter or on the base
            alone (the routed reasoning adapter).
        STOP_SAMPLES: ``generate_short_m`` draws k samples of a prompt in parallel and stops the rest once m
            have finished thinking (short-m@k, first-finish).
    """

    CONTINUE_FROM_IDS = "continue_from_ids"
    LOGITS_PROCESSORS = "logits_processors"
    RESIDUAL_HOOKS = "residual_hooks"
    HIDDEN_STATES = "hidden_states"
    PER_PROMPT_ADAPTER = "per_prompt_adapter"
    STOP_SAMPLES = "stop_samples"
