"""An example user reward for effreason recipes: copy this file and change the formula.

Use it from a recipe's YAML by file path (relative to where you launch) or by dotted path (the
module must be importable, e.g. run with ``PYTHONPATH=.`` from the repository root)::

    rewards:
      - {name: correctness, mode: math}
      - {name: rewards/example_user_reward.py:TokenBudget, budget_tokens: 512, weight: 0.5}
      - {name: rewards.example_user_reward:boxed_answer, weight: 0.1}

A reward is called by TRL as ``reward(prompts=..., completions=..., completion_ids=..., **columns)``
where ``columns`` are the dataset's other columns (one value per completion) plus ``trainer_state``.
It returns one float per completion, or ``None`` to abstain on that completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from effreason.format import answer_text
from effreason.rewards import completion_texts


class TokenBudget:
    """Soft token budget: no penalty up to the budget, then a linear penalty for the overflow.

    ``r = -penalty * max(0, L - budget_tokens) / budget_tokens``, with ``L = len(completion_ids[i])``
    (tokens, never characters). Add it to a correctness reward.

    A reward with parameters is a class: its instances pickle, and ``__name__`` is the name TRL logs
    (``rewards/token_budget/mean``).

    Args:
        budget_tokens: completion length allowed without penalty.
        penalty: penalty for a completion twice the budget.
    """

    def __init__(self, budget_tokens: int, penalty: float = 1.0) -> None:
        if budget_tokens <= 0:
            raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")
        self.__name__ = "token_budget"
        self.budget_tokens = budget_tokens
        self.penalty = penalty

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        overflow = [max(0, len(ids) - self.budget_tokens) / self.budget_tokens for ids in completion_ids]
        return [-self.penalty * x for x in overflow]


def boxed_answer(prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Sequence[Sequence[int]],
                 **kwargs: Any) -> list[float | None]:
    """1.0 if the answer (the text after ``</think>``) contains a ``\\boxed{...}``, else 0.0.

    A reward without parameters can be a plain function; ``completion_texts`` reads string and
    chat-message completions alike.
    """
    rewards: list[float | None] = []
    for text in completion_texts(completions):
        answer = answer_text(text)
        rewards.append(1.0 if answer is not None and "\\boxed{" in answer else 0.0)
    return rewards
