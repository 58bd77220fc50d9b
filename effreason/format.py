"""The one place that knows the reasoning format: R1-style ``<think> ... </think>`` then the answer.

Everything that splits a completion into thinking and answer, builds a prompt, or counts completion
tokens goes through this module, so rewards, evaluation and data tools can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

THINK_START = "<think>"
THINK_END = "</think>"

#: Instruction appended to math problems for real (hub) reasoning models.
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

#: Short names accepted wherever an instruction is set (``--instruction math``, ``instruction: math``).
INSTRUCTION_ALIASES = {"math": MATH_INSTRUCTION}


def resolve_instruction(instruction: str | None) -> str | None:
    """The instruction text for a setting: an alias (``math``) expanded, anything else as given."""
    if instruction is None:
        return None
    return INSTRUCTION_ALIASES.get(instruction, instruction)


@dataclass(frozen=True)
class SplitCompletion:
    """A completion split at the end-of-thinking marker.

    Attributes:
        thinking: text inside the thinking block ("" when the model did not think).
        answer: text after the last ``</think>``; ``None`` when thinking never closed (truncated).
        closed: whether a ``</think>`` was found.
    """

    thinking: str
    answer: str | None
    closed: bool


def split_thinking(text: str) -> SplitCompletion:
    """Split a completion into its thinking and its answer.

    Rules (R1 convention): text after the *last* ``</think>`` is the answer. A completion that
    opened ``<think>`` (or whose chat template opened it in the prompt, so only ``</think>`` would
    appear) but never closed it was cut off while thinking: it has no answer. A completion with
    neither marker comes from a model that does not think in tags: all of it is the answer.
    """
    end = text.rfind(THINK_END)
    if end >= 0:
        thinking = text[:end]
        start = thinking.find(THINK_START)
        if start >= 0:
            thinking = thinking[start + len(THINK_START) :]
        return SplitCompletion(thinking.strip(), text[end + len(THINK_END) :], True)
    start = text.find(THINK_START)
    if start >= 0:
        return SplitCompletion(text[start + len(THINK_START) :].strip(), None, False)
    return SplitCompletion("", text, False)


def prompt_opens_thinking(prompt: str) -> bool:
    """Whether a rendered prompt leaves a thinking block open, so the completion starts inside it.

    DeepSeek-R1-Distill's chat template ends the generation prompt with ``<think>\\n`` (Qwen3's with
    ``enable_thinking=False`` closes it again: ``<think>\\n\\n</think>``). Such a completion holds
    only ``</think>``, and one cut off while thinking holds no marker at all.
    """
    return prompt.rfind(THINK_START) > prompt.rfind(THINK_END)


def completion_in_context(prompt: str | None, completion: str) -> str:
    """The completion as ``split_thinking`` must read it: with the ``<think>`` its prompt opened put back.

    Without this, a completion of an R1-style prompt cut off while thinking would read as all answer
    (its thinking graded, its tokens counted as answer tokens).
    """
    return THINK_START + completion if prompt and prompt_opens_thinking(prompt) else completion


def answer_text(text: str) -> str | None:
    """The part of a completion a grader may read: after thinking, or ``None`` if truncated."""
    return split_thinking(text).answer


def chat_prompt(problem: str, *, instruction: str | None = None, system_prompt: str | None = None) -> list[dict]:
    """Build a conversational prompt (a list of chat messages) for one problem.

    Args:
        problem: the problem statement.
        instruction: appended to the problem on a new line (e.g. ``MATH_INSTRUCTION``).
        system_prompt: optional system message.
    """
    content = problem if not instruction else f"{problem}\n{instruction}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": content})
    return messages


def with_instruction(messages: list[dict], instruction: str | None) -> list[dict]:
    """Messages with ``instruction`` appended on a new line to the last user message (a copy).

    Used for per-prompt instructions such as TLDR's length level. ``None`` or ``""`` returns a copy.
    """
    out = [dict(m) for m in messages]
    if not instruction:
        return out
    for m in reversed(out):
        if m.get("role") == "user":
            m["content"] = f"{m['content']}\n{instruction}"
            return out
    raise ValueError(f"cannot add the instruction {instruction!r}: the prompt has no user message")


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """Messages with ``system_prompt`` as the (only) system message; unchanged when it is ``None``."""
    if system_prompt is None:
        return list(messages)
    return [{"role": "system", "content": system_prompt}] + [m for m in messages if m["role"] != "system"]


def render_prompt(tokenizer, messages: list[dict], *, chat_template: bool = True,
                  template_kwargs: dict | None = None) -> tuple[str, list[int]]:
    """Prompt text and ids: the chat template with the generation prompt, or the plain contents.

    Without a template (``chat_template=False`` or a tokenizer that has none) the message contents are
    joined by blank lines and tokenized with the tokenizer's special tokens (BOS where it uses one).
    """
    if chat_template and tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                             **(template_kwargs or {}))
        return text, tokenizer(text, add_special_tokens=False)["input_ids"]
    text = "\n\n".join(m["content"] for m in messages)
    return text, tokenizer(text)["input_ids"]


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a conversational prompt with the generation prompt appended (chat template)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


def count_completion_tokens(token_ids: Sequence[int], eos_token_ids: Sequence[int] | int | None,
                            pad_token_id: int | None = None) -> int:
    """Number of generated tokens: up to and including the first end-of-sequence token.

    This is what TRL's ``completion_ids`` and vLLM's ``token_ids`` hold, so training rewards and
    evaluation count the same way. Padding after the end (HF batched generation) is not counted.
    """
    if isinstance(eos_token_ids, int):
        eos = {eos_token_ids}
    else:
        eos = set(eos_token_ids or ())
    for i, tok in enumerate(token_ids):
        if tok in eos:
            return i + 1
    n = len(token_ids)
    if pad_token_id is not None and pad_token_id not in eos:
        while n and token_ids[n - 1] == pad_token_id:
            n -= 1
    return n
