"""What every generation backend returns."""

from __future__ import annotations

from dataclasses import dataclass, field


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
