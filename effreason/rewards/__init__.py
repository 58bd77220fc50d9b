"""Reward functions for TRL's ``GRPOTrainer``, and the builders that make them from config.

Every reward is a picklable callable with a stable ``__name__`` (TRL logs it as
``rewards/<name>/mean``) and TRL's signature ``reward(prompts, completions, completion_ids, **columns)
-> list[float | None]`` (``None``: abstain on that row). Completions may be strings or chat messages.
Lengths are tokens, ``len(completion_ids[i])``. Gold answers come from the ``answer`` column.

    funcs, weights = build_rewards([{"name": "correctness", "mode": "math"},
                                    {"name": "kimi", "weight": 0.5}],
                                   context={"num_generations": 8, "max_completion_tokens": 1024})
    validate_group_layout(grpo_config, funcs)
"""

from effreason.rewards.correctness import Correctness
from effreason.rewards.format import Format, completion_text, completion_texts
from effreason.rewards.groups import group_blocks, group_stats, validate_group_layout
from effreason.rewards.length import LGRPO, CosineLength, DAPOOverlong, KimiLength, L1Exact, L1Max, TLDRLength
from effreason.rewards.registry import (
    BoundReward,
    build_reward,
    build_rewards,
    register_reward,
    resolve_reward,
    reward_names,
)

__all__ = [
    "BoundReward",
    "CosineLength",
    "Correctness",
    "DAPOOverlong",
    "Format",
    "KimiLength",
    "L1Exact",
    "L1Max",
    "LGRPO",
    "TLDRLength",
    "build_reward",
    "build_rewards",
    "completion_text",
    "completion_texts",
    "group_blocks",
    "group_stats",
    "register_reward",
    "resolve_reward",
    "reward_names",
    "validate_group_layout",
]
