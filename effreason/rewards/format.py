"""Reading a completion as text, and the format reward.

TRL passes completions either as strings (standard datasets) or as a list of chat messages
(conversational datasets). ``completion_text`` turns both into the text the rest of the project
reads, so every reward and the grader see the same string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from effreason.format import THINK_END, THINK_START, split_thinking

#: Message keys under which a tokenizer's response parser may put the thinking it split off
#: (TRL ``parse_response`` with a response schema: ``reasoning_content``; some families ``thinking``).
_REASONING_KEYS = ("reasoning_content", "thinking")


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text blocks of a multimodal content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    raise TypeError(f"unsupported message content of type {type(content).__name__}")


def completion_text(completion: str | Sequence[dict]) -> str:
    """The text of one completion, whether a string or a list of chat messages.

    For a conversational completion this is the content of the last assistant message. When the
    tokenizer's response parser split the thinking into its own field, the thinking block is put
    back in front (``<think> ... </think> content``) so the format checks see what the model wrote.
    """
    if isinstance(completion, str):
        return completion
    assistant = [m for m in completion if isinstance(m, dict) and m.get("role") == "assistant"]
    if not assistant:
        roles = [m.get("role") if isinstance(m, dict) else type(m).__name__ for m in completion]
        raise ValueError(f"conversational completion has no assistant message (roles: {roles})")
    message = assistant[-1]
    text = _content_text(message.get("content"))
    for key in _REASONING_KEYS:
        reasoning = message.get(key)
        if isinstance(reasoning, str) and reasoning.strip():
            return f"{THINK_START}{reasoning}{THINK_END}{text}"
    return text


def completion_texts(completions: Sequence[str | Sequence[dict]]) -> list[str]:
    """``completion_text`` for each completion of a batch."""
    return [completion_text(c) for c in completions]


class Format:
    """1.0 if the completion closed its thinking block and then gave a non-empty answer, else 0.0.

    ``r = 1[</think> present and the text after the last </think> is not blank]``, the R1 format
    reward (DeepSeek-R1, arXiv 2501.12948) with the project's one parser
    (``effreason.format.split_thinking``). A completion without any thinking markers scores 0: it
    did not follow the format. Add it to a correctness reward with a small weight.
    """

    def __init__(self) -> None:
        self.__name__ = "format"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        rewards: list[float | None] = []
        for text in completion_texts(completions):
            split = split_thinking(text)
            ok = split.closed and split.answer is not None and bool(split.answer.strip())
            rewards.append(1.0 if ok else 0.0)
        return rewards
