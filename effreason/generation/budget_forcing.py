"""Budget forcing (s1, arXiv 2501.19393) as a generation-time method: cut, force ``</think>``, continue.

A completion may think for at most ``B`` tokens; if it has not closed its thinking by then, the
thinking is cut after ``B`` tokens and the end-of-thinking marker plus an answer prefix (``</think>
the answer is \\boxed{``) is appended, and the model writes the answer from there. We take the first
``B`` tokens from the full-length generation rather than generating again with ``max_new_tokens=B``:
under greedy decoding they are the same tokens, and under sampling they are a sample from the same
distribution, so every budget costs only the short forced answer on top of the one unbudgeted
generation.

Runs on every backend: it needs only ``Capability.CONTINUE_FROM_IDS``. Settings (the ``EvalConfig``
fields of the same names, ``--budgets``, ``--answer-prefix``, ``--budget-answer-tokens``):
``budgets`` (thinking budgets in tokens), ``answer_prefix`` (text forced after ``</think>``; by
default the benchmark's ``BenchmarkSpec.answer_prefix``), ``budget_answer_tokens`` (tokens allowed
after the forced text). Each base rollout gains one variant per budget, recording
``{"budget_forcing": {"forced_at": N}}`` (``N`` thinking tokens kept before the forced text, ``None``
when the completion fit the budget and is kept as generated). A continuation's sampling seed is the
base sample's plus ``7919 * budget``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from effreason.format import THINK_END
from effreason.generation.methods import Rollout, RolloutStep
from effreason.generation.thinking import single_token_id, think_end_tokens
from effreason.generation.types import Capability, Generation

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NAME = "budget_forcing"
#: Seeds apart from the unbudgeted samples' (seed + index): a prime larger than any benchmark.
SEED_STRIDE = 7919


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


def force_budgets(backend: Any, rollouts: list[Rollout], *, budgets: Sequence[int], forced: list[int],
                  answer_tokens: int) -> list[Rollout]:
    """One variant per rollout and budget: kept when within budget, else cut, forced and continued.

    All continuations of the chunk go to ``backend.generate`` in one call (one seed each), so the
    batches, hence the results, depend only on the chunk.

    Args:
        forced: ids of ``</think>`` + answer prefix (``forced_ids``).
        answer_tokens: tokens generated after the forced text.
    """
    tok = backend.tokenizer
    think_end_id = single_token_id(tok, THINK_END)
    think_end_len = 1 if think_end_id is not None else len(tok(THINK_END, add_special_tokens=False)["input_ids"])
    out: list[Rollout] = []
    to_force: list[tuple[int, list[int]]] = []  # (index in out, cut ids)
    for r in rollouts:
        ids = r.gen.token_ids
        end = think_end_tokens(ids, tok, last=False, think_end_id=think_end_id)
        for b in budgets:
            cut = budget_cut(ids, r.gen.num_tokens, r.gen.finished, b, end, think_end_len)
            info = {**r.info, NAME: {"forced_at": None if cut is None else len(cut)}}
            out.append(replace(r, budget=b, forced=cut is not None, new_tokens=0, info=info))
            if cut is not None:
                to_force.append((len(out) - 1, cut))
    if to_force:
        prompts = [out[i].prompt_ids + cut + forced for i, cut in to_force]
        seeds = [out[i].seed + SEED_STRIDE * out[i].budget for i, _ in to_force]
        conts = backend.generate(prompts, n=1, max_new_tokens=answer_tokens, seeds=seeds)
        for (i, cut), (cont,) in zip(to_force, conts, strict=True):
            ids = cut + forced + cont.token_ids
            text = tok.decode(ids, skip_special_tokens=True)
            out[i].gen = Generation(text=text, num_tokens=len(ids), finished=cont.finished, token_ids=ids)
            out[i].new_tokens = cont.num_tokens
    return out


class BudgetForcing:
    """s1 budget forcing: variants of every base completion, one per thinking budget."""

    name = NAME
    requires = frozenset({Capability.CONTINUE_FROM_IDS})
    setting_names = frozenset({"budgets", "answer_prefix", "budget_answer_tokens"})

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Nothing to add: ``--budgets``, ``--answer-prefix`` and ``--budget-answer-tokens`` are eval options
        of their own (``EvalConfig`` fields), older than the method shape."""

    def settings(self, args: argparse.Namespace) -> dict | None:
        """``None``: the settings live in the ``EvalConfig`` fields, which ``EvalConfig.method_settings`` reads."""
        return None

    def post_processor(self, backend: Any, settings: dict) -> RolloutStep:
        forced = forced_ids(backend.tokenizer, settings["answer_prefix"])
        budgets = sorted(settings["budgets"])

        def step(rollouts: list[Rollout]) -> list[Rollout]:
            return rollouts + force_budgets(backend, rollouts, budgets=budgets, forced=forced,
                                            answer_tokens=settings["budget_answer_tokens"])

        return step


METHOD = BudgetForcing()
