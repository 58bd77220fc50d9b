"""Reading TRL's per-batch reward arguments: dataset columns and completion lengths in tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Keyword arguments TRL adds to every reward call that are not dataset columns.
TRL_EXTRA_KWARGS = ("trainer_state", "log_extra", "log_metric", "environments")


def batch_column(kwargs: dict[str, Any], column: str, n: int, reward_name: str, purpose: str) -> list[Any]:
    """One dataset column as TRL passes it to a reward (one value per completion).

    Args:
        kwargs: the reward's keyword arguments.
        column: the column name.
        n: number of completions in the batch.
        reward_name: for the error message.
        purpose: what the column holds, for the error message (e.g. "gold answers").

    Raises:
        ValueError: the column is missing or has the wrong length; the message lists the columns present.
    """
    if column not in kwargs:
        present = sorted(k for k in kwargs if k not in TRL_EXTRA_KWARGS)
        raise ValueError(
            f"reward {reward_name!r} needs the dataset column {column!r} ({purpose}), but the batch has "
            f"columns {present}. Add the column to the dataset or point the reward at another column."
        )
    values = list(kwargs[column])
    if len(values) != n:
        raise ValueError(
            f"reward {reward_name!r}: column {column!r} has {len(values)} values for {n} completions"
        )
    return values


def completion_lengths(completion_ids: Sequence[Sequence[int]], n: int, reward_name: str) -> list[int]:
    """Completion lengths in tokens: ``len(completion_ids[i])``.

    TRL's ``completion_ids`` stop at the first end-of-sequence token (included) and carry no padding,
    so this is the project's token count (``effreason.format.count_completion_tokens``).
    """
    if len(completion_ids) != n:
        raise ValueError(
            f"reward {reward_name!r}: got {len(completion_ids)} completion_ids for {n} completions"
        )
    return [len(ids) for ids in completion_ids]
