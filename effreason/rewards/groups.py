"""Prompt groups: how TRL lays them out, checks that a reward sees whole groups, per-group statistics.

How TRL 1.16's ``GRPOTrainer`` hands completions to rewards (read from ``trl/trainer/grpo_trainer.py``):

- The sampler repeats each prompt ``num_generations`` (G) times in a row, so a group is G
  *consecutive* completions of one prompt.
- Each process loads a *local generation batch* of ``per_device_train_batch_size *
  steps_per_generation`` rows, a contiguous slice of the global generation batch, and calls every
  reward on that local batch only. Rewards are gathered across processes afterwards, and the
  advantage normalisation (``rewards.view(-1, G)``) runs on the gathered tensor.
- So the advantage is always computed over whole groups, but a reward function sees a whole group
  only if the local batch is a multiple of G. TRL checks only the *global* generation batch
  (``generation_batch_size % num_generations``); with several processes a group can be split.
  ``validate_group_layout`` rejects such a layout at start-up; group rewards re-check at call time.
- In evaluation TRL uses ``num_generations_eval`` groups over ``per_device_eval_batch_size`` rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from effreason.stats import percentile


def group_blocks(prompts: Sequence[Any], num_generations: int, reward_name: str) -> list[range]:
    """Split a batch into its prompt groups: consecutive blocks of ``num_generations``.

    Raises:
        ValueError: the batch is not a whole number of groups, or a block mixes prompts (the reward's
            ``num_generations`` does not match the trainer's, or TRL split a group across processes).
    """
    n = len(prompts)
    if n % num_generations:
        raise ValueError(
            f"reward {reward_name!r} scores each prompt's group of num_generations={num_generations} "
            f"consecutive completions, but this process got {n} completions, not a multiple of "
            f"{num_generations}: a group was split. Make per_device_train_batch_size * "
            "steps_per_generation a multiple of num_generations (effreason.rewards.validate_group_layout "
            "checks this at start-up), and give the reward the trainer's num_generations."
        )
    blocks = [range(start, start + num_generations) for start in range(0, n, num_generations)]
    for block in blocks:
        first = prompts[block.start]
        for i in block:
            if prompts[i] != first:
                raise ValueError(
                    f"reward {reward_name!r}: completions {block.start}..{block.stop - 1} should share one "
                    f"prompt (a group of num_generations={num_generations}), but completion {i} has a "
                    "different prompt. The reward's num_generations does not match the trainer's (in "
                    "evaluation TRL uses num_generations_eval), or the batch was reordered."
                )
    return blocks


def _resolved_steps_per_generation(args: Any, num_processes: int) -> int:
    """``steps_per_generation`` as TRL's ``GRPOConfig.__post_init__`` resolves it."""
    steps = getattr(args, "steps_per_generation", None)
    if steps is not None:
        return int(steps)
    generation_batch_size = getattr(args, "generation_batch_size", None)
    if generation_batch_size is not None:
        return int(generation_batch_size) // (int(args.per_device_train_batch_size) * num_processes)
    return int(getattr(args, "gradient_accumulation_steps", 1))


def _eval_enabled(args: Any) -> bool:
    strategy = getattr(args, "eval_strategy", "no")
    strategy = getattr(strategy, "value", strategy)  # transformers' IntervalStrategy enum or a string
    return strategy not in ("no", None)  # transformers sets do_eval=True whenever a strategy is set


def validate_group_layout(args: Any, reward_funcs: Sequence[Callable] | None = None, *,
                          num_processes: int | None = None) -> None:
    """Check at start-up that every group reward will see whole prompt groups.

    Call it with the ``GRPOConfig`` (or any object with the same attributes) before training.

    Args:
        args: the trainer config: ``num_generations``, ``per_device_train_batch_size``,
            ``steps_per_generation`` (or ``generation_batch_size`` / ``gradient_accumulation_steps``),
            and for evaluation ``num_generations_eval``, ``per_device_eval_batch_size``, ``eval_strategy``.
        reward_funcs: the rewards. Group rewards are those with a ``num_generations`` attribute; if
            none is one, nothing needs checking. ``None`` checks the layout unconditionally.
        num_processes: world size; defaults to ``args.world_size`` (1 if absent).

    Raises:
        ValueError: with the setting to change.
    """
    group_rewards = [f for f in (reward_funcs or []) if getattr(f, "num_generations", None) is not None]
    if reward_funcs is not None and not group_rewards:
        return
    num_generations = int(args.num_generations)
    for func in group_rewards:
        if func.num_generations != num_generations:
            raise ValueError(
                f"reward {getattr(func, '__name__', func)!r} was built with num_generations="
                f"{func.num_generations}, but the trainer uses num_generations={num_generations}: set the "
                "reward's num_generations to the trainer's (build_rewards fills it in from its context)."
            )
    num_processes = int(num_processes or getattr(args, "world_size", 1) or 1)
    steps = _resolved_steps_per_generation(args, num_processes)
    local = int(args.per_device_train_batch_size) * steps
    if local % num_generations:
        step = num_generations // math.gcd(num_generations, steps)
        raise ValueError(
            "group rewards need whole prompt groups on each process, but per_device_train_batch_size * "
            f"steps_per_generation = {args.per_device_train_batch_size} * {steps} = {local} is not a "
            f"multiple of num_generations={num_generations}, so TRL would split a group across processes. "
            f"Set per_device_train_batch_size to a multiple of {step} (or change steps_per_generation / "
            "num_generations)."
        )
    if not _eval_enabled(args):
        return
    eval_generations = int(getattr(args, "num_generations_eval", None) or num_generations)
    if eval_generations != num_generations:
        raise ValueError(
            f"group rewards are built for num_generations={num_generations}, but evaluation uses "
            f"num_generations_eval={eval_generations}. Leave num_generations_eval unset or equal to "
            "num_generations."
        )
    eval_batch = int(getattr(args, "per_device_eval_batch_size", num_generations))
    if eval_batch % num_generations:
        raise ValueError(
            f"per_device_eval_batch_size={eval_batch} is not a multiple of num_generations="
            f"{num_generations}, so evaluation would split prompt groups across processes. Make it a "
            "multiple."
        )


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def group_stats(correct: Sequence[bool], lengths: Sequence[int], num_generations: int) -> dict[str, float]:
    """Per-batch statistics of prompt groups, for logging during RL.

    Args:
        correct: whether each completion is correct, groups as consecutive blocks.
        lengths: completion lengths in tokens, same order.
        num_generations: group size G.

    Returns:
        ``reward/accuracy``, ``reward/frac_all_correct_groups`` (the groups where L-GRPO's length
        term acts), ``reward/frac_solved_groups`` (at least one correct), ``reward/frac_mixed_groups``
        (some but not all correct: the groups with an accuracy signal), ``completions/tokens_mean``,
        ``/tokens_median``, ``/tokens_max``, ``/tokens_correct_mean`` and
        ``/tokens_wrong_mean`` (NaN when there is no such completion).
    """
    if len(correct) != len(lengths):
        raise ValueError(f"group_stats: {len(correct)} correctness values for {len(lengths)} lengths")
    if num_generations < 1 or len(correct) % num_generations:
        raise ValueError(f"group_stats: {len(correct)} completions are not whole groups of {num_generations}")
    groups = [correct[s : s + num_generations] for s in range(0, len(correct), num_generations)]
    solved = [sum(bool(c) for c in g) for g in groups]  # correct completions per group
    ordered = sorted(float(x) for x in lengths)
    right = [float(x) for x, c in zip(lengths, correct, strict=True) if c]
    wrong = [float(x) for x, c in zip(lengths, correct, strict=True) if not c]
    return {
        "reward/accuracy": _mean([float(bool(c)) for c in correct]),
        "reward/frac_all_correct_groups": _mean([float(k == num_generations) for k in solved]),
        "reward/frac_solved_groups": _mean([float(k > 0) for k in solved]),
        "reward/frac_mixed_groups": _mean([float(0 < k < num_generations) for k in solved]),
        "completions/tokens_mean": _mean(ordered),
        "completions/tokens_median": percentile(ordered, 50),
        "completions/tokens_max": ordered[-1] if ordered else math.nan,
        "completions/tokens_correct_mean": _mean(right),
        "completions/tokens_wrong_mean": _mean(wrong),
    }


def log_group_stats(kwargs: dict[str, Any], correct: Sequence[bool | None], lengths: Sequence[int],
                    num_generations: int) -> None:
    """Send ``group_stats`` through TRL's ``log_metric`` reward argument, when the trainer passes one.

    Groups with an abstained (``None``) completion are left out; NaN values are not sent (TRL
    averages the values of a logging step and a NaN would poison the average).
    """
    log_metric = kwargs.get("log_metric")
    if not callable(log_metric):
        return
    keep = [
        i for s in range(0, len(correct), num_generations)
        if all(c is not None for c in correct[s : s + num_generations])
        for i in range(s, s + num_generations)
    ]
    if not keep:
        return
    stats = group_stats([bool(correct[i]) for i in keep], [lengths[i] for i in keep], num_generations)
    for key, value in stats.items():
        if not math.isnan(value):
            log_metric(key, value)
