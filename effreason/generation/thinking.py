"""Where thinking ends in token ids: the one token counter for thinking vs answer tokens.

*Thinking tokens* are the generated tokens up to and including the last ``</think>`` (the split
``effreason.format.split_thinking`` makes on text); *answer tokens* are the rest. When ``</think>`` is
one token of the vocabulary (lab, Qwen3, DeepSeek-R1 distills) we find its id in the generated ids;
otherwise we find the shortest decoded prefix that contains it. A completion that never closes its
thinking counts as all thinking if it opened ``<think>``, else as all answer, exactly as
``split_thinking`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from effreason.format import THINK_END, THINK_START

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["THINK_END", "THINK_START", "single_token_id", "split_text_token_counts", "split_token_counts",
           "think_end_tokens"]


def single_token_id(tokenizer: PreTrainedTokenizerBase, text: str) -> int | None:
    """The id of ``text`` when it encodes to exactly one token, else ``None``."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None


def think_end_tokens(token_ids: Sequence[int], tokenizer: PreTrainedTokenizerBase, *, last: bool = True,
                     think_end_id: int | None = None) -> int | None:
    """Number of tokens up to and including the first (or last) ``</think>``; ``None`` if never closed.

    Args:
        think_end_id: id of ``</think>`` when it is a single token (see ``single_token_id``); without
            it the position is found by decoding prefixes (binary search, as containment only grows).
    """
    if think_end_id is not None:
        hits = [i for i, t in enumerate(token_ids) if t == think_end_id]
        return (hits[-1] if last else hits[0]) + 1 if hits else None
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True)
    needed = text.count(THINK_END) if last else min(1, text.count(THINK_END))
    if needed == 0:
        return None
    lo, hi = 1, len(token_ids)  # the smallest prefix length whose text holds `needed` markers
    while lo < hi:
        mid = (lo + hi) // 2
        if tokenizer.decode(list(token_ids[:mid]), skip_special_tokens=True).count(THINK_END) >= needed:
            hi = mid
        else:
            lo = mid + 1
    return lo


def split_token_counts(token_ids: Sequence[int], num_tokens: int, text: str, tokenizer: PreTrainedTokenizerBase,
                       think_end_id: int | None = None) -> tuple[int, int]:
    """``(thinking_tokens, answer_tokens)`` of a generated completion (they sum to ``num_tokens``)."""
    end = think_end_tokens(token_ids[:num_tokens], tokenizer, last=True, think_end_id=think_end_id)
    if end is not None:
        return end, num_tokens - end
    return (num_tokens, 0) if THINK_START in text else (0, num_tokens)


def split_text_token_counts(text: str, tokenizer: PreTrainedTokenizerBase, *,
                            opened: bool = False) -> tuple[int, int]:
    """``(thinking_tokens, answer_tokens)`` of a completion known only as text (``--completions``).

    The completion is tokenized whole, and the thinking part (through the last ``</think>``) on its
    own; the answer gets the difference. Re-tokenizing text may differ by a token or so from the ids
    the model generated: these are estimates, the best a text-only input allows. ``opened``: the
    prompt opened ``<think>`` (``effreason.format.prompt_opens_thinking``), so unclosed text is thinking.
    """
    total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    end = text.rfind(THINK_END)
    if end >= 0:
        thinking = len(tokenizer(text[: end + len(THINK_END)], add_special_tokens=False)["input_ids"])
        thinking = min(thinking, total)
        return thinking, total - thinking
    return (total, 0) if opened or THINK_START in text else (0, total)
