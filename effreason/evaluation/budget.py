"""Thinking budgets: where thinking ends in token ids, and s1-style budget forcing.

Budget forcing (s1, arXiv 2501.19393): a completion may think for at most ``B`` tokens; if it has
not closed its thinking by then, the thinking is cut after ``B`` tokens and the end-of-thinking
marker plus an answer prefix (``</think> the answer is \\boxed{``) is appended, and the model
writes the answer from there. We take the first ``B`` tokens from the full-length generation rather
than generating again with ``max_new_tokens=B``: under greedy decoding they are the same tokens, and
under sampling they are a sample from the same distribution, so every budget costs only the short
forced answer on top of the one unbudgeted generation.

Token counts. *Thinking tokens* are the generated tokens up to and including the last ``</think>``
(the split ``effreason.format.split_thinking`` makes on text); *answer tokens* are the rest. When
``</think>`` is one token of the vocabulary (lab, Qwen3, DeepSeek-R1 distills) we find its id in the
generated ids; otherwise we find the shortest decoded prefix that contains it. A completion that never
closes its thinking counts as all thinking if it opened ``<think>``, else as all answer, exactly as
``split_thinking`` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from effreason.format import THINK_END, THINK_START
from effreason.lab.traces import ANSWER_PREFIX as LAB_ANSWER_PREFIX

#: Text forced after the cut thinking, by prompt format. The lab tokenizer is word-level, so its prefix
#: uses lab words only; real tokenizers get the usual boxed-answer phrasing.
ANSWER_PREFIXES = {
    "lab": " " + LAB_ANSWER_PREFIX,
    "math": "\n\nThe final answer is \\boxed{",
}

LAB_BENCHMARKS = ("lab", "lab_hard")


def default_answer_prefix(benchmark: str | None) -> str:
    """The answer prefix to force after ``</think>`` for a benchmark (lab words for lab benchmarks)."""
    return ANSWER_PREFIXES["lab" if benchmark in LAB_BENCHMARKS else "math"]


def forced_ids(tokenizer: PreTrainedTokenizerBase, answer_prefix: str) -> list[int]:
    """Token ids of ``</think>`` + answer prefix; an error if the tokenizer cannot spell them."""
    text = THINK_END + answer_prefix
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    # Compare without whitespace: tokenizers differ in how they space words, not in which they keep.
    decoded = tokenizer.decode(ids)
    round_trip = "".join(decoded.split()) == "".join(text.split())
    if not ids or (unk is not None and unk in ids) or not round_trip:
        raise ValueError(
            f"the tokenizer cannot encode the forced text {text!r} faithfully (it decodes to {decoded!r}); "
            "pass an --answer-prefix made of words in its vocabulary"
        )
    return ids


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


def split_text_token_counts(text: str, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """``(thinking_tokens, answer_tokens)`` of a completion known only as text (``--completions``).

    The completion is tokenized whole, and the thinking part (through the last ``</think>``) on its
    own; the answer gets the difference. Re-tokenizing text may differ by a token or so from the ids
    the model generated: these are estimates, the best a text-only input allows.
    """
    total = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    end = text.rfind(THINK_END)
    if end >= 0:
        thinking = len(tokenizer(text[: end + len(THINK_END)], add_special_tokens=False)["input_ids"])
        thinking = min(thinking, total)
        return thinking, total - thinking
    return (total, 0) if THINK_START in text else (0, total)


def budget_cut(token_ids: Sequence[int], num_tokens: int, finished: bool, budget: int,
               think_end: int | None, think_end_len: int = 1) -> list[int] | None:
    """Where budget forcing cuts a completion, or ``None`` when it fits the budget as generated.

    A completion fits when it closed its thinking after at most ``budget`` thinking tokens (the
    ``</think>`` marker itself not counted), or when it ended by itself within ``budget`` tokens without
    closing. Otherwise the first ``budget`` tokens are kept and the caller appends the forced text.

    Args:
        think_end: tokens through the *first* ``</think>`` (``think_end_tokens(..., last=False)``).
        think_end_len: how many tokens the ``</think>`` marker takes.
    """
    if budget < 1:
        raise ValueError(f"token budgets must be >= 1, got {budget}")
    if think_end is not None and think_end - think_end_len <= budget:
        return None
    if think_end is None and finished and num_tokens <= budget:
        return None
    return list(token_ids[: min(budget, num_tokens)])
