"""Perplexity-based Importance Refinement (PIR) scores of reasoning steps (LIMOPro, arXiv 2505.19187).

    PIR(step_i) = log( PPL(A | Q, R without step_i) / PPL(A | Q, R) )
                = meanNLL(A | Q, R without step_i) - meanNLL(A | Q, R)

``A`` is the answer text after ``</think>`` (the tokens scored), ``Q`` the problem rendered with the
scorer's chat template, ``R`` the thinking. Each step is removed on its own from the full trace (scores
are not recomputed after deletions). Higher PIR = the answer leans more on the step.

Cost: n+1 sequences per trace (n ablated steps). They are packed into as few forward passes as
``max_batch_tokens`` allows (padded batch size x length). Padding is on the right, so every real
token keeps the positions it has alone; logits are computed only at the answer positions (no
(B, T, vocab) tensor). The shared prefix (question + steps before the removed one) is *not* reused
through a KV cache: each sequence runs in full. The answer is tokenized once and appended to every
sequence, so all n+1 perplexities are over the same token ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from effreason.format import THINK_END, THINK_START, chat_prompt, chat_prompt_ids, split_thinking

logger = logging.getLogger(__name__)


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


def ablation_sequences(tokenizer, problem: str, trace: ParsedTrace,
                       ablate: Sequence[int]) -> tuple[list[list[int]], int]:
    """Token ids of the full trace then one sequence per step in ``ablate`` (that step removed).

    Returns:
        (sequences, answer_tokens): each sequence ends with the same ``answer_tokens`` answer ids.
    """
    prompt = chat_prompt_ids(tokenizer, chat_prompt(problem))
    head_trace = trace
    if tokenizer.decode(prompt[-4:]).rstrip().endswith(THINK_START):
        # The chat template already opened <think> (some R1 templates do): do not open it twice.
        head_trace = ParsedTrace(trace.head.replace(THINK_START, "", 1).lstrip(), trace.steps,
                                 trace.tail, trace.answer)
    answer = _encode(tokenizer, trace.answer)
    if not answer:
        raise ValueError("the answer after </think> is empty: there is nothing to score")
    keeps = [None] + [[j != i for j in range(len(trace.steps))] for i in ablate]
    seqs = [prompt + _encode(tokenizer, head_trace.thinking_block(k)) + answer for k in keeps]
    return seqs, len(answer)


def _batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest-first so that batch size x longest length <= max_batch_tokens
    (a sequence longer than the budget runs alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.no_grad()
def answer_nll(model, sequences: Sequence[Sequence[int]], answer_tokens: int, *, pad_token_id: int,
               max_batch_tokens: int = 16384) -> list[float]:
    """Mean negative log-likelihood of the last ``answer_tokens`` tokens of each sequence.

    Uses ``model.base_model`` (the decoder) and ``model.get_output_embeddings()`` so that logits are
    computed only at the answer positions; any HF causal LM without logit post-processing
    (e.g. no final-logit soft-capping) fits. ``max_batch_tokens=0`` runs one sequence per pass.
    """
    if answer_tokens < 1:
        raise ValueError(f"answer_tokens must be >= 1, got {answer_tokens}")
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    lengths = [len(s) for s in sequences]
    if min(lengths) <= answer_tokens:
        raise ValueError("every sequence needs at least one context token before the answer")
    out = [0.0] * len(sequences)
    for batch in _batches(lengths, max_batch_tokens):
        t_max = lengths[batch[0]]
        ids = torch.full((len(batch), t_max), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), t_max), dtype=torch.long)
        for row, i in enumerate(batch):  # right padding: real tokens keep their positions
            ids[row, :lengths[i]] = torch.tensor(sequences[i])
            mask[row, :lengths[i]] = 1
        hidden = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        # Position t predicts token t+1: answer tokens [L-A, L) are predicted at [L-A-1, L-1).
        offsets = torch.arange(answer_tokens)
        pos = torch.stack([offsets + lengths[i] - answer_tokens - 1 for i in batch]).to(device)  # (B, A)
        h = hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, A, H)
        logp = torch.log_softmax(head(h).float(), dim=-1)  # (B, A, V)
        targets = ids.to(device).gather(1, pos + 1)  # (B, A)
        nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).mean(dim=1)  # (B,)
        for row, i in enumerate(batch):
            out[i] = float(nll[row])
    return out


def pir_scores(model, tokenizer, problem: str, trace: ParsedTrace, ablate: Sequence[int], *,
               max_batch_tokens: int = 16384) -> dict[int, float]:
    """PIR of each step index in ``ablate`` (see the module docstring); ``{}`` when none."""
    if not ablate:
        return {}
    seqs, answer_tokens = ablation_sequences(tokenizer, problem, trace, ablate)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    nll = answer_nll(model, seqs, answer_tokens, pad_token_id=pad, max_batch_tokens=max_batch_tokens)
    return {i: nll[k + 1] - nll[0] for k, i in enumerate(ablate)}
