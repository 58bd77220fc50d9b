"""Length buckets a reasoning adapter is asked to keep its thinking within.

A bucket is a name, a budget of thinking tokens and the instruction appended to the prompt that requests
it (default ``"think for <tokens> tokens"``). The paper prompts buckets of about 1k and 3k tokens and does
not publish its wording or reward; both are ours (``effreason.adapters.data.bucket_reward_spec``: the
``tldr`` reward counting thinking tokens).

A bucket may also have a ``floor``: the RL reward then penalises thinking *shorter* than it too, so the
bucket is the band ``[floor, tokens]``. Without floors RL on a task where short traces are as accurate as
long ones (the lab) pulls every bucket to the shortest reliable length (measured: the lab's long and
medium buckets fell from 136 and 115 greedy thinking tokens to 33 within 30 steps at lr 1e-4), because
under sampling fewer tokens mean fewer slips. A floor at the next smaller bucket's budget matches the
SFT's hindsight labels (a trace is labelled with the smallest bucket it fits, so the bucket's examples lie
above the smaller budget). Floors only shape the RL reward; "within a bucket" at deployment means at most ``tokens``.

The buckets an adapter was trained with are saved next to it (``effreason_adapter.json`` in the adapter
folder, ``effreason.adapters.adapter``), so ``effreason eval --adapter DIR --bucket short`` finds the
instruction the adapter learned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bucket:
    """A requested length: at most ``tokens`` thinking tokens, asked for by ``instruction``."""

    name: str
    tokens: int
    instruction: str
    penalty: float = 1.0  # the RL reward's weight on leaving the bucket
    floor: int | None = None  # the RL reward also penalises fewer thinking tokens than this


def parse_buckets(spec: Mapping[str, Any], where: str = "buckets") -> list[Bucket]:
    """Buckets from config, ``{short: {tokens: 48}, medium: {tokens: 96, instruction: "..."}}``, sorted by tokens.

    Raises:
        ValueError: naming the bucket and the bad or unknown setting.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"{where} must map each bucket name to {{tokens, instruction, penalty, floor}}, e.g. "
                         "{short: {tokens: 48}, long: {tokens: 192}}")
    from effreason.training.data import length_fields

    out = []
    for name, item in spec.items():
        tokens, penalty, instruction, floor = length_fields(
            f"{where}.{name}", item, budget="tokens", weight="penalty", unit="thinking tokens",
            instruction=lambda n: f"think for {n} tokens")
        out.append(Bucket(str(name), tokens, instruction, penalty, floor))
    sizes = [b.tokens for b in out]
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"{where}: two buckets have the same number of tokens ({sizes}); each needs its own")
    return sorted(out, key=lambda b: b.tokens)


def hindsight_bucket(thinking_tokens: int, buckets: Sequence[Bucket]) -> Bucket | None:
    """The smallest bucket a trace of ``thinking_tokens`` fits in, or ``None`` when it fits in none."""
    for bucket in sorted(buckets, key=lambda b: b.tokens):
        if thinking_tokens <= bucket.tokens:
            return bucket
    return None


def find_bucket(buckets: Sequence[Bucket], name: str, where: str) -> Bucket:
    """The bucket called ``name``; an unknown name lists the ones there are."""
    for bucket in buckets:
        if bucket.name == name:
            return bucket
    raise ValueError(f"no bucket {name!r} in {where}; buckets: {', '.join(b.name for b in buckets)}")
