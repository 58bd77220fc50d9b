"""Training data of the reasoning adapter: SFT traces with hindsight length buckets, RL prompts with buckets.

**SFT rows** (``sft_rows``): reasoning traces (the lab's, or yours: a JSONL file or dataset read by
``effreason.pruning.load_traces``), each ``{id, problem, completion, answer}``. A share of them
(``bucket_share``) get, appended to the prompt, the instruction of the *smallest bucket their own thinking
fits in* (hindsight labels: the trace is an example of obeying that bucket); the rest are left as they are
and teach the adapter to reason unprompted. Traces that fit no bucket stay unlabelled. The paper SFTs on
unbucketed traces and teaches the buckets by RL alone; a real instruction-tuned base already reads "think
for 1000 tokens", which the lab's tiny base cannot (the TLDR recipe measured that RL alone did not teach the
lab model to read length words within minutes), so the labels are **our choice** that gives RL a model
that can tell the buckets apart. RL (stage 2) then makes it keep within them.

On the lab, traces are written for ``lab_mixed``'s training problems (one to eight steps), in the
verbose-leaning mix of the lab's overthinker (``verbose_share``) for unlabelled rows and in an even mix for
labelled rows (so that each bucket has examples of every step count it can hold).

**RL prompts** (``rl_prompts``): problems with a bucket drawn per prompt (``effreason.training.data.add_length_levels``),
in the ``length_bucket`` column the reward reads.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from effreason.adapters.buckets import Bucket, hindsight_bucket

BUCKET_COLUMN = "length_bucket"


def lab_sft_traces(num: int, *, seed: int, verbose_share: float, bucket_share: float) -> list[dict]:
    """``num`` lab traces of ``lab_mixed`` training problems: ``{id, problem, completion, answer, styled}``.

    ``styled`` marks the rows drawn for bucket labels (even concise / verbose mix), the others are drawn with
    ``verbose_share``.
    """
    from effreason.lab.datasets import lab_problems
    from effreason.lab.traces import sample_style, write_trace

    problems = lab_problems("mixed_train")
    rng = random.Random(seed)
    rows = []
    for i in range(num):
        problem = rng.choice(problems)
        styled = rng.random() < bucket_share
        trace = write_trace(problem, sample_style(rng, 0.5 if styled else verbose_share), rng)
        rows.append({"id": f"lab/mixed_train/sft/{i}", "problem": problem.text(), "completion": trace.text,
                     "answer": str(problem.answer), "styled": styled})
    return rows


def label_buckets(rows: Sequence[dict], buckets: Sequence[Bucket], tokenizer: Any, *, bucket_share: float,
                  seed: int) -> list[dict]:
    """Rows with ``bucket`` (name or ``None``) and ``thinking_tokens``: a ``bucket_share`` of them (the lab's
    ``styled`` rows when marked) get the smallest bucket their thinking fits in."""
    from effreason.generation.thinking import split_text_token_counts

    rng = random.Random(f"{seed}/buckets")
    out = []
    for row in rows:
        thinking, _ = split_text_token_counts(row["completion"], tokenizer)
        chosen = row["styled"] if "styled" in row else rng.random() < bucket_share
        bucket = hindsight_bucket(thinking, buckets) if chosen else None
        out.append({**row, "thinking_tokens": thinking, "bucket": bucket.name if bucket else None})
    return out


def bucket_counts(rows: Sequence[dict], buckets: Sequence[Bucket]) -> dict:
    """How many SFT rows each bucket labels (``none``: unlabelled), for the recipe's summary."""
    counts = {b.name: 0 for b in buckets} | {"none": 0}
    for row in rows:
        counts[row["bucket"] or "none"] += 1
    return counts


def rl_prompts(recipe: Any, buckets: Sequence[Bucket], seed: int) -> Any:
    """The RL prompts: the recipe's training problems, each with a bucket drawn uniformly (``length_bucket``)."""
    from effreason.training.data import LengthLevel, add_length_levels, training_dataset

    levels = [LengthLevel(b.name, b.tokens, b.penalty, b.instruction, b.floor) for b in buckets]
    return add_length_levels(training_dataset(recipe), levels, seed=seed, column=BUCKET_COLUMN)


def bucket_reward_spec(buckets: Sequence[Bucket], think_end_id: int, mode: str) -> dict:
    """The RL reward: ``1[correct] - penalty_b * (max(0, T - B_b) / B_b + max(0, F_b - T) / F_b)`` with ``T`` the
    thinking tokens, ``B_b`` the requested bucket's budget and ``F_b`` its floor (the second term only for
    buckets with a floor; ``effreason.rewards.TLDRLength`` counting thinking tokens)."""
    spec = {"name": "tldr", "tokens": "thinking", "think_end_id": think_end_id, "level_column": BUCKET_COLUMN,
            "budgets": {b.name: b.tokens for b in buckets}, "lambdas": {b.name: b.penalty for b in buckets},
            "mode": mode}
    floors = {b.name: b.floor for b in buckets if b.floor is not None}
    return spec | ({"floors": floors} if floors else {})
