r"""Perplexity-based Importance Refinement (PIR) scores of reasoning steps (LIMOPro, arXiv 2505.19187).

    PIR(step_i) = log( PPL(G | Q, R without step_i) / PPL(G | Q, R) )
                = meanNLL(G | Q, R without step_i) - meanNLL(G | Q, R)

``Q`` is the problem rendered with the scorer's chat template, ``R`` the thinking, ``G`` the **gold
answer's tokens only** (METHODS.md section 3). Each step is removed on its own from the full trace
(scores are not recomputed after deletions). Higher PIR = the answer leans more on the step.

Where the gold tokens sit (our choice; the paper scores "the answer" without saying how it is laid
out): in the trace's own final answer, in place of the content of its last ``\boxed{...}``. The
scored sequence is ``Q + <think> R </think> + lead-in + G`` with lead-in = the text after ``</think>``
up to that ``\boxed{`` (for the lab: ``the answer is \boxed{``), and G = the gold answer, with the
blank that opened the box content (lab: `` 7``). Without a ``\boxed{``, G replaces the last
occurrence of the gold text in the answer; if it does not occur there the trace is refused. Text
after G is dropped (it cannot change G's likelihood). ``answer_prefix`` replaces the lead-in with a
fixed text, e.g. when the answer restates the result before the box (then G is easy to copy and
every PIR shrinks towards 0).

Rows without a gold answer: the content of the trace's own last ``\boxed{}`` is scored instead
(target ``"boxed"``), or the whole answer text when there is no box (target ``"answer"``); results
record which (``PrunedTrace.pir_target``; ``effreason prune`` warns when any row had no gold).

Cost: n+1 sequences per trace. By default the full trace runs once with a KV cache and each
ablation only recomputes the tokens after the removed step (``effreason.pruning.nll``); the text
pieces (prompt, thinking, lead-in, G) are tokenized separately, so all n+1 sequences end with the
same G ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from effreason.format import (
    THINK_END,
    THINK_START,
    chat_prompt,
    chat_prompt_ids,
    prompt_opens_thinking,
    split_thinking,
)
from effreason.grading.extract import find_last_boxed
from effreason.pruning.nll import answer_nll, shared_prefix_nll

logger = logging.getLogger(__name__)

BOXED = "\\boxed{"
#: What ``PrunedTrace.pir_target`` says was scored: the gold answer, the trace's own boxed answer, or
#: its whole answer text (no gold, no box).
TARGETS = ("gold", "boxed", "answer")


@dataclass(frozen=True)
class ParsedTrace:
    """A completion cut into ``head`` + steps + ``tail`` + ``answer``; concatenation gives it back.

    Attributes:
        head: text before the thinking (e.g. ``"<think>\\n"``).
        steps: consecutive slices of the thinking (see ``effreason.pruning.segment``).
        tail: from the end of the thinking to the end of ``</think>``.
        answer: text after ``</think>``.
    """

    head: str
    steps: tuple[str, ...]
    tail: str
    answer: str

    def thinking_block(self, keep: Sequence[bool] | None = None) -> str:
        """``head`` + kept steps + ``tail`` (trailing whitespace of the last kept step dropped)."""
        kept = self.steps if keep is None else [s for s, k in zip(self.steps, keep, strict=True) if k]
        body = "".join(kept).rstrip()
        if self.steps and not body:
            return self.head.rstrip() + self.tail.lstrip()
        return self.head + body + self.tail

    def render(self, keep: Sequence[bool] | None = None) -> str:
        """The completion with only the kept steps (all steps when ``keep`` is None)."""
        return self.thinking_block(keep) + self.answer


def parse_trace(completion: str, segmenter) -> ParsedTrace:
    """Cut a completion into head, steps (by ``segmenter``), tail and answer.

    Raises:
        ValueError: the thinking never closed (a truncated completion has no answer to score).
    """
    split = split_thinking(completion)
    if split.answer is None or not split.closed:
        raise ValueError("completion has no closed </think> (truncated?); it cannot be scored or pruned")
    end = completion.rfind(THINK_END) + len(THINK_END)
    opened = max(completion.find(THINK_START, 0, end), 0)
    start = completion.find(split.thinking, opened, end) if split.thinking else end - len(THINK_END)
    steps = tuple(segmenter(split.thinking)) if split.thinking else ()
    if "".join(steps) != split.thinking:
        raise ValueError(f"segmenter {type(segmenter).__name__} lost text: its segments do not re-join "
                         "to the thinking")
    return ParsedTrace(completion[:start], steps, completion[start + len(split.thinking):end], split.answer)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class ScoredAnswer:
    """The answer part of a scored sequence: ``lead_in`` (context) then ``target`` (scored tokens)."""

    lead_in: str
    target: str
    kind: str  # one of TARGETS


def _move_blank(lead_in: str, target: str) -> tuple[str, str]:
    """``(target, lead_in)`` with the lead-in's trailing blanks moved to the target (BPE tokenizers
    join a space to the word after it)."""
    kept = lead_in.rstrip()
    return lead_in[len(kept):] + target, kept


def _leading_blank(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def scored_answer(answer: str, gold: str | None, answer_prefix: str | None = None) -> ScoredAnswer:
    """Place the scored tokens in the answer text after ``</think>`` (see the module docstring).

    Raises:
        ValueError: an empty gold answer, or a gold answer that has no place in ``answer``.
    """
    if gold is not None:
        gold = str(gold).strip()
        if not gold:
            raise ValueError("the gold answer is empty: give a non-empty `answer` or drop the field")
        if answer_prefix is not None:
            target, lead_in = _move_blank(answer_prefix, gold)
            return ScoredAnswer(lead_in, target, "gold")
        box = answer.rfind(BOXED)
        if box >= 0:
            start = box + len(BOXED)
            return ScoredAnswer(answer[:start], _leading_blank(answer[start:]) + gold, "gold")
        at = answer.rfind(gold)
        if at < 0:
            raise ValueError(f"the answer after </think> has no \\boxed{{}} and does not contain the gold answer "
                             f"{gold!r}: cannot place the gold tokens (fix the row's `answer`, or pass an answer "
                             "prefix)")
        target, lead_in = _move_blank(answer[:at], gold)
        return ScoredAnswer(lead_in, target, "gold")
    boxed = find_last_boxed(answer)
    box = answer.rfind(BOXED)
    if boxed is not None and boxed.strip() and box >= 0:
        start = box + len(BOXED)
        return ScoredAnswer(answer[:start], _leading_blank(answer[start:]) + boxed.strip(), "boxed")
    if not answer.strip():
        raise ValueError("the answer after </think> is empty: there is nothing to score")
    target, lead_in = _move_blank(_leading_blank(answer), answer.strip())
    return ScoredAnswer(lead_in, target, "answer")


@dataclass(frozen=True)
class Ablations:
    """Token ids to score: ``sequences[0]`` is the full trace, then one per ablated step.

    Attributes:
        sequences: every sequence ends with the same ``scored_tokens`` ids (the target's).
        scored_tokens: how many ids at the end of each sequence are scored.
        target: what was scored (one of ``TARGETS``).
    """

    sequences: list[list[int]]
    scored_tokens: int
    target: str


def ablation_sequences(tokenizer, problem: str, trace: ParsedTrace, ablate: Sequence[int], *,
                       gold: str | None = None, answer_prefix: str | None = None) -> Ablations:
    """Token ids of the full trace then one sequence per step in ``ablate`` (that step removed)."""
    prompt = chat_prompt_ids(tokenizer, chat_prompt(problem))
    head_trace = trace
    if prompt_opens_thinking(tokenizer.decode(prompt)):
        # The chat template already opened <think> (R1-Distill's does): do not open it twice. The whole
        # prompt is decoded: a BPE that splits "<think>" spends more tokens on it than any fixed tail.
        head_trace = ParsedTrace(trace.head.replace(THINK_START, "", 1).lstrip(), trace.steps,
                                 trace.tail, trace.answer)
    scored = scored_answer(trace.answer, gold, answer_prefix)
    lead_in, target = _encode(tokenizer, scored.lead_in), _encode(tokenizer, scored.target)
    if not target:
        raise ValueError(f"the scored text {scored.target!r} has no tokens")
    keeps = [None] + [[j != i for j in range(len(trace.steps))] for i in ablate]
    seqs = [prompt + _encode(tokenizer, head_trace.thinking_block(k)) + lead_in + target for k in keeps]
    return Ablations(seqs, len(target), scored.kind)


def scored_tokens(tokenizer, problem: str, completion: str, *, gold: str | None = None,
                  answer_prefix: str | None = None) -> int:
    """Length of the longest sequence PIR scores for a trace (the prompt, the whole trace, the scored answer)."""
    trace = parse_trace(completion, lambda thinking: [thinking])  # the full trace does not depend on the steps
    return len(ablation_sequences(tokenizer, problem, trace, [], gold=gold, answer_prefix=answer_prefix).sequences[0])


def context_tokens(config) -> int | None:
    """The positions a model config allows (``max_position_embeddings``), if it says."""
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def pir_scores(model, tokenizer, problem: str, trace: ParsedTrace, ablate: Sequence[int], *,
               gold: str | None = None, answer_prefix: str | None = None, max_batch_tokens: int = 16384,
               reuse_prefix: bool = True) -> tuple[dict[int, float], str | None]:
    """PIR of each step index in ``ablate`` (see the module docstring).

    Args:
        gold: the gold answer (scored tokens); None scores the trace's own final answer.
        answer_prefix: fixed text between ``</think>`` and the gold answer (default: the trace's own).
        max_batch_tokens: padded tokens per forward pass.
        reuse_prefix: reuse the full trace's KV cache (False: every sequence runs in full).

    Returns:
        (``{step index: PIR}``, the target kind scored); ``({}, None)`` when ``ablate`` is empty.
    """
    if not ablate:
        return {}, None
    abl = ablation_sequences(tokenizer, problem, trace, ablate, gold=gold, answer_prefix=answer_prefix)
    seqs, pad = abl.sequences, _pad_id(tokenizer)
    limit = context_tokens(getattr(model, "config", None))
    if limit is not None and len(seqs[0]) > limit:  # beyond it the scores would be noise, not an error
        raise ValueError(f"the scored trace has {len(seqs[0])} tokens, more than the scorer's context of {limit}")
    if reuse_prefix:
        full, ablated = shared_prefix_nll(model, seqs[0], seqs[1:], abl.scored_tokens, pad_token_id=pad,
                                          max_batch_tokens=max_batch_tokens)
    else:
        full, *ablated = answer_nll(model, seqs, abl.scored_tokens, pad_token_id=pad,
                                    max_batch_tokens=max_batch_tokens)
    return {i: ablated[k] - full for k, i in enumerate(ablate)}, abl.target
