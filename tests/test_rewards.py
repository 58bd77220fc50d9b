"""Rewards for TRL's GRPOTrainer: hand-computed values for every formula, group checks, registry, pickling."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

from effreason.rewards import (
    LGRPO,
    BoundReward,
    Correctness,
    CosineLength,
    DAPOOverlong,
    Format,
    KimiLength,
    L1Exact,
    L1Max,
    TLDRLength,
    build_reward,
    build_rewards,
    completion_text,
    group_blocks,
    group_stats,
    register_reward,
    reward_names,
    validate_group_layout,
)
from effreason.rewards import registry as registry_module

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "rewards" / "example_user_reward.py"


def lab(answer: int | str, steps: int = 1) -> str:
    """A completion in the lab format; ``steps`` repeats the thinking to vary its text."""
    thinking = " ".join(["s1 7 + 5 = 1 ;"] * steps)
    return f"<think> {thinking} </think> the answer is \\boxed{{ {answer} }}"


def call(reward, completions, lengths, prompts=None, **columns):
    """Call a reward the way TRL does, with completion_ids of the given token lengths."""
    prompts = prompts if prompts is not None else ["p"] * len(completions)
    completion_ids = [[5] * n for n in lengths]
    return reward(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)


def groups_of(k: int, g: int) -> list[str]:
    """Prompts for ``k`` groups of ``g``: ["p0"] * g + ["p1"] * g + ..."""
    return [f"p{i}" for i in range(k) for _ in range(g)]


# ---------------------------------------------------------------- completion text and format


def test_completion_text_reads_strings_and_messages():
    assert completion_text("abc") == "abc"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": lab(7)}]
    assert completion_text(messages) == lab(7)
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    blocks = [{"role": "assistant", "content": parts}]
    assert completion_text(blocks) == "ab"
    with pytest.raises(ValueError, match="no assistant message"):
        completion_text([{"role": "user", "content": "q"}])


def test_completion_text_restores_thinking_split_off_by_a_response_parser():
    parsed = [{"role": "assistant", "reasoning_content": "s1 7 + 5 = 1 ;", "content": " the answer is 1"}]
    assert completion_text(parsed) == "<think>s1 7 + 5 = 1 ;</think> the answer is 1"
    assert Format()(prompts=["p"], completions=[parsed], completion_ids=[[1]]) == [1.0]


def test_format_reward():
    completions = [
        lab(7),                                   # closed thinking, answer
        "<think> s1 7 + 5 = 1 ; </think>   ",     # closed, empty answer
        "<think> s1 7 + 5 = 1 ; wait",            # truncated while thinking
        "the answer is \\boxed{ 7 }",             # no thinking markers at all
        "s1 7 + 5 = 1 ; </think> 7",              # template opened <think> in the prompt
        [{"role": "assistant", "content": lab(3)}],
    ]
    assert call(Format(), completions, [1] * 6) == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]


# ---------------------------------------------------------------- correctness


def test_correctness_exact_on_lab_format():
    reward = Correctness(mode="exact")
    chat = [{"role": "assistant", "content": lab(7)}]
    completions = [lab(7), lab(8), "<think> s1 7 + 5 = 1 ; wait", chat, lab(7)]
    out = call(reward, completions, [1] * 5, answer=["7", "7", "7", "7", None])
    assert out == [1.0, 0.0, 0.0, 1.0, None]


def test_correctness_math_mode_uses_symbolic_equivalence():
    reward = Correctness(mode="math")
    completions = ["<think> x </think> \\boxed{\\frac{1}{2}}", "<think> x </think> so \\boxed{0.5}",
                   "<think> x </think> \\boxed{3}"]
    try:
        out = call(reward, completions, [1] * 3, answer=["1/2"] * 3)
    finally:
        reward.close()
    assert out == [1.0, 1.0, 0.0]


def test_correctness_needs_the_answer_column():
    with pytest.raises(ValueError, match="'answer'.*columns \\['level'\\]"):
        call(Correctness(mode="exact"), [lab(7)], [1], level=["x"], trainer_state=None)


def test_correctness_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode='fuzzy'"):
        Correctness(mode="fuzzy")


class CountingGrader:
    """Counts grade_batch calls on top of a real grader."""

    def __init__(self, grader):
        self.grader, self.calls = grader, 0

    def grade_batch(self, completions, golds):
        self.calls += 1
        return self.grader.grade_batch(completions, golds)


def test_rewards_share_one_grader_and_grade_a_batch_once():
    funcs, weights = build_rewards(
        [{"name": "correctness", "mode": "exact", "weight": 2}, {"name": "kimi", "mode": "exact"},
         {"name": "lgrpo", "mode": "exact", "alpha": 0.5}],
        context={"num_generations": 2, "max_completion_tokens": 100},
    )
    assert weights == [2.0, 1.0, 1.0]
    assert funcs[1].correctness is funcs[0] and funcs[2].correctness is funcs[0]
    counter = CountingGrader(funcs[0]._get_grader())
    funcs[0]._grader = counter
    batch = dict(completions=[lab(7), lab(8)], lengths=[10, 20], answer=["7", "7"])
    for func in funcs:
        call(func, **batch)
    assert counter.calls == 1
    call(funcs[0], [lab(7), lab(9)], [10, 20], answer=["7", "7"])  # a new batch is graded again
    assert counter.calls == 2


# ---------------------------------------------------------------- group-relative rewards


def test_lgrpo_hand_computed():
    reward = LGRPO(num_generations=4, alpha=0.5, max_completion_tokens=100, mode="exact")
    completions = [lab(7)] * 4 + [lab(7), lab(8), lab(7), lab(7)] + [lab(7)] * 4
    lengths = [10, 20, 30, 40] + [10, 20, 30, 40] + [50, 100, 150, 100]
    out = call(reward, completions, lengths, prompts=groups_of(3, 4), answer=["7"] * 12)
    # all correct: 1 + 0.5 * (1 - L/100); L=150 is clamped to 100
    expected = [1.45, 1.40, 1.35, 1.30] + [1.0, 0.0, 1.0, 1.0] + [1.25, 1.0, 1.0, 1.0]
    assert out == pytest.approx(expected)


def test_lgrpo_logs_group_stats_through_trl_log_metric():
    logged: dict[str, float] = {}
    reward = LGRPO(num_generations=2, alpha=0.5, max_completion_tokens=100, mode="exact")
    call(reward, [lab(7), lab(7), lab(7), lab(8)], [10, 30, 20, 40], prompts=groups_of(2, 2),
         answer=["7"] * 4, log_metric=logged.__setitem__)
    assert logged["reward/frac_all_correct_groups"] == 0.5
    assert logged["reward/accuracy"] == 0.75
    assert logged["completions/tokens_mean"] == 25.0
    assert logged["completions/tokens_wrong_mean"] == 40.0


def test_kimi_hand_computed():
    reward = KimiLength(num_generations=4, mode="exact")
    completions = [lab(7), lab(8), lab(7), lab(8)] + [lab(7), lab(8), lab(7), lab(7)]
    lengths = [10, 20, 30, 50] + [5, 5, 5, 5]
    out = call(reward, completions, lengths, prompts=groups_of(2, 4), answer=["7"] * 8)
    # group 1: L_min=10, L_max=50, lam = 0.5 - (L-10)/40 = [0.5, 0.25, 0.0, -0.5]
    #          correct -> lam, wrong -> min(0, lam)
    # group 2: equal lengths -> 0
    assert out == pytest.approx([0.5, 0.0, 0.0, -0.5] + [0.0, 0.0, 0.0, 0.0])


def test_kimi_uses_each_prompts_own_group_not_the_batch():
    reward = KimiLength(num_generations=2, mode="exact")
    out = call(reward, [lab(7)] * 4, [10, 20, 100, 200], prompts=groups_of(2, 2), answer=["7"] * 4)
    assert out == pytest.approx([0.5, -0.5, 0.5, -0.5])  # batch-wide min/max would give [0.5, 0.447, ...]


def test_group_rewards_reject_a_split_group():
    reward = LGRPO(num_generations=4, alpha=0.5, max_completion_tokens=100, mode="exact")
    with pytest.raises(ValueError, match="got 6 completions, not a multiple of 4"):
        call(reward, [lab(7)] * 6, [10] * 6, prompts=["p"] * 6, answer=["7"] * 6)


def test_group_rewards_reject_a_block_that_mixes_prompts():
    reward = KimiLength(num_generations=2, mode="exact")
    prompts = [[{"role": "user", "content": "a"}]] * 3 + [[{"role": "user", "content": "b"}]]
    with pytest.raises(ValueError, match="completion 3 has a different prompt"):
        call(reward, [lab(7)] * 4, [10] * 4, prompts=prompts, answer=["7"] * 4)


def test_group_blocks_are_consecutive():
    assert group_blocks(groups_of(3, 2), 2, "t") == [range(0, 2), range(2, 4), range(4, 6)]


# ---------------------------------------------------------------- per-completion length rewards


def test_tldr_hand_computed():
    reward = TLDRLength(budgets={"short": 100, "long": 400}, lambdas={"short": 0.5, "long": 1.0},
                        mode="exact")
    completions = [lab(7), lab(7), lab(8), lab(7)]
    levels = ["short", "short", "long", "long"]
    out = call(reward, completions, [80, 150, 600, 400], answer=["7"] * 4, length_level=levels)
    # 1 - 0.5 * max(0, 150 - 100) / 100 = 0.75;   0 - 1.0 * (600 - 400) / 400 = -0.5
    assert out == pytest.approx([1.0, 0.75, -0.5, 1.0])
    with pytest.raises(ValueError, match="level 'medium'.*\\['long', 'short'\\]"):
        call(reward, [lab(7)], [10], answer=["7"], length_level=["medium"])


def test_tldr_floor_hand_computed():
    reward = TLDRLength(budgets={"short": 64, "long": 320}, floors={"long": 128}, mode="exact")
    completions = [lab(7), lab(7), lab(7), lab(8)]
    out = call(reward, completions, [40, 40, 200, 64], answer=["7"] * 4,
               length_level=["short", "long", "long", "long"])
    # short has no floor: 1.0;  long at 40 tokens: 1 - (128 - 40) / 128 = 0.3125;  within [128, 320]: 1.0
    # wrong at 64 tokens: 0 - (128 - 64) / 128 = -0.5
    assert out == pytest.approx([1.0, 0.3125, 1.0, -0.5])
    with pytest.raises(ValueError, match="below its budget"):
        TLDRLength(budgets={"long": 128}, floors={"long": 128})
    with pytest.raises(ValueError, match="floor for level 'medium'"):
        TLDRLength(budgets={"long": 128}, floors={"medium": 10})


def test_tldr_needs_a_weight_for_every_level():
    with pytest.raises(ValueError, match="no weight for levels \\['long'\\]"):
        TLDRLength(budgets={"short": 100, "long": 400}, lambdas={"short": 0.5})


def test_cosine_hand_computed():
    # defaults: correct (1, 2), wrong (-10, 0), exceed -10
    reward = CosineLength(max_completion_tokens=100, mode="exact")
    completions = [lab(7), lab(7), lab(7), lab(8), lab(8), lab(7), lab(8)]
    lengths = [0, 50, 25, 0, 50, 100, 100]
    out = call(reward, completions, lengths, answer=["7"] * 7)
    # c = 0.5 (1 + cos(pi L / 100)): L=0 -> 1, L=50 -> 0.5, L=25 -> 0.853553
    # correct: 1 + 1 * c;  wrong: 0 + (-10) * c;  L >= 100 -> exceed -10
    assert out == pytest.approx([2.0, 1.5, 1.853553, -10.0, -5.0, -10.0, -10.0], abs=1e-6)
    no_exceed = CosineLength(max_completion_tokens=100, exceed_reward=None, mode="exact")
    assert call(no_exceed, [lab(7), lab(8), lab(7)], [100, 100, 150], answer=["7"] * 3) == pytest.approx(
        [1.0, 0.0, 1.0])  # at and beyond L_max (clamped): correct -> v_min = 1, wrong -> v_max = 0


def test_cosine_rejects_a_reversed_range():
    with pytest.raises(ValueError, match="v_min <= v_max"):
        CosineLength(max_completion_tokens=100, correct_range=(2.0, 1.0))


def test_dapo_overlong_hand_computed():
    reward = DAPOOverlong(max_completion_tokens=100, cache_tokens=20)
    out = call(reward, ["x"] * 5, [50, 80, 90, 100, 120])
    assert out == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])  # (80 - 90) / 20 = -0.5
    with pytest.raises(ValueError, match="must not exceed"):
        DAPOOverlong(max_completion_tokens=100, cache_tokens=200)


def test_l1_exact_hand_computed():
    reward = L1Exact(mode="exact")  # alpha = 3e-4
    out = call(reward, [lab(7), lab(8)], [60, 150], answer=["7", "7"], target_tokens=[100, 100])
    assert out == pytest.approx([1 - 0.012, -0.015])  # 3e-4 * 40, 3e-4 * 50


def test_l1_max_hand_computed():
    reward = L1Max(alpha=0.01, mode="exact")
    completions = [lab(7), lab(7), lab(7), lab(7), lab(8)]
    out = call(reward, completions, [60, 100, 200, 10, 60], answer=["7"] * 5, target_tokens=[100] * 5)
    # clip(0.01 (100 - L) + 0.5, 0, 1): L=60 -> 0.9, 100 -> 0.5, 200 -> 0, 10 -> 1; wrong -> 0
    assert out == pytest.approx([0.9, 0.5, 0.0, 1.0, 0.0])


def test_l1_needs_a_positive_integer_target():
    with pytest.raises(ValueError, match="'target_tokens'"):
        call(L1Exact(mode="exact"), [lab(7)], [10], answer=["7"])
    with pytest.raises(ValueError, match="positive integer"):
        call(L1Max(alpha=0.01, mode="exact"), [lab(7)], [10], answer=["7"], target_tokens=[None])


def test_lengths_are_tokens_not_characters():
    reward = DAPOOverlong(max_completion_tokens=10, cache_tokens=5)
    long_text = "x" * 1000
    assert call(reward, [long_text], [3]) == [0.0]
    with pytest.raises(ValueError, match="2 completion_ids for 1 completions"):
        reward(prompts=["p"], completions=["x"], completion_ids=[[1], [2]])


# ---------------------------------------------------------------- start-up layout check


def layout(**overrides):
    values = dict(num_generations=4, per_device_train_batch_size=2, steps_per_generation=2,
                  eval_strategy="no", per_device_eval_batch_size=4, num_generations_eval=None)
    values.update(overrides)
    return SimpleNamespace(**values)


def test_validate_group_layout():
    validate_group_layout(layout())  # 2 * 2 = 4 per process
    with pytest.raises(ValueError, match="2 \\* 1 = 2 is not a multiple of num_generations=4.*multiple of 4"):
        validate_group_layout(layout(steps_per_generation=1))
    with pytest.raises(ValueError, match="multiple of 2"):
        validate_group_layout(layout(per_device_train_batch_size=3, steps_per_generation=2))
    # steps_per_generation unset: TRL derives it from generation_batch_size / (batch * processes)
    validate_group_layout(layout(steps_per_generation=None, generation_batch_size=16), num_processes=4)
    with pytest.raises(ValueError, match="2 \\* 1 = 2"):
        validate_group_layout(layout(steps_per_generation=None, generation_batch_size=8), num_processes=4)


def test_validate_group_layout_checks_rewards_and_eval():
    kimi = KimiLength(num_generations=8)
    with pytest.raises(ValueError, match="num_generations=8, but the trainer uses num_generations=4"):
        validate_group_layout(layout(), [kimi])
    validate_group_layout(layout(steps_per_generation=1), [Format()])  # no group reward: nothing to check
    with pytest.raises(ValueError, match="num_generations_eval=2"):
        validate_group_layout(layout(eval_strategy="steps", num_generations_eval=2))
    with pytest.raises(ValueError, match="per_device_eval_batch_size=6"):
        validate_group_layout(layout(eval_strategy="steps", per_device_eval_batch_size=6))


def test_validate_group_layout_on_a_real_grpo_config(tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=4,
                      steps_per_generation=2, report_to=[], bf16=False, use_cpu=True)
    validate_group_layout(args, [KimiLength(num_generations=4)])
    # What a 2-process run with steps_per_generation=1 would see: TRL accepts the global batch of 4.
    with pytest.raises(ValueError, match="would split a group"):
        validate_group_layout(SimpleNamespace(**{**vars(args), "steps_per_generation": 1}))


# ---------------------------------------------------------------- group statistics


def test_group_stats_hand_computed():
    correct = [1, 1, 1, 1] + [1, 0, 0, 0] + [0, 0, 0, 0]
    lengths = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]
    stats = group_stats([bool(c) for c in correct], lengths, num_generations=4)
    assert stats["reward/accuracy"] == pytest.approx(5 / 12)
    assert stats["reward/frac_all_correct_groups"] == pytest.approx(1 / 3)
    assert stats["reward/frac_solved_groups"] == pytest.approx(2 / 3)
    assert stats["reward/frac_mixed_groups"] == pytest.approx(1 / 3)
    assert stats["completions/tokens_mean"] == 65.0            # 780 / 12
    assert stats["completions/tokens_median"] == 65.0          # between 60 and 70
    assert "completions/tokens_p90" not in stats  # logged once, by the trainer, over the whole batch
    assert stats["completions/tokens_max"] == 120.0
    assert stats["completions/tokens_correct_mean"] == 30.0    # (10+20+30+40+50) / 5
    assert stats["completions/tokens_wrong_mean"] == 90.0      # 630 / 7
    assert math.isnan(group_stats([False, False], [1, 2], 2)["completions/tokens_correct_mean"])
    with pytest.raises(ValueError, match="not whole groups"):
        group_stats([True] * 3, [1] * 3, 2)


# ---------------------------------------------------------------- registry


def test_every_builtin_name_builds():
    context = {"num_generations": 4, "max_completion_tokens": 256}
    extra = {"lgrpo": {"alpha": 0.5}, "tldr": {"budgets": {"short": 64}}, "l1_max": {"alpha": 0.01},
             "dapo_overlong": {"cache_tokens": 64}}
    assert reward_names() == sorted(["correctness", "format", "lgrpo", "kimi", "tldr", "cosine",
                                     "dapo_overlong", "l1_exact", "l1_max"])
    for name in reward_names():
        reward = build_reward({"name": name, **extra.get(name, {})}, context=context)
        assert reward.__name__ == name


def test_context_fills_only_missing_parameters():
    reward = build_reward({"name": "lgrpo", "alpha": 0.5, "max_completion_tokens": 64},
                          context={"num_generations": 8, "max_completion_tokens": 256})
    assert (reward.num_generations, reward.max_completion_tokens) == (8, 64)


def test_registry_errors_name_the_bad_key_and_list_valid_ones():
    with pytest.raises(ValueError, match="unknown reward 'lgrp'.*'lgrpo'"):
        build_reward("lgrp")
    with pytest.raises(ValueError, match="unknown parameter 'alpah'; valid parameters: num_generations, "
                                         "max_completion_tokens, alpha"):
        build_reward({"name": "lgrpo", "alpah": 0.5, "num_generations": 4, "max_completion_tokens": 9})
    with pytest.raises(ValueError, match="missing required parameter\\(s\\) \\['alpha'\\]"):
        build_reward({"name": "lgrpo", "num_generations": 4, "max_completion_tokens": 9})
    with pytest.raises(ValueError, match="rewards\\[1\\] \\('cosine'\\): missing.*max_completion_tokens"):
        build_rewards(["correctness", {"name": "cosine"}])
    with pytest.raises(ValueError, match="has no 'name'"):
        build_reward({"alpha": 0.5})
    with pytest.raises(ValueError, match="weight must be a number"):
        build_rewards([{"name": "format", "weight": "high"}])
    with pytest.raises(ValueError, match="non-empty list"):
        build_rewards("correctness")
    with pytest.raises(ValueError, match="mode='maths'"):
        build_reward({"name": "correctness", "mode": "maths"})


def test_duplicate_log_names_are_rejected_and_log_name_renames():
    with pytest.raises(ValueError, match="both log as 'rewards/format'.*log_name"):
        build_rewards(["format", "format"])
    funcs, _ = build_rewards(["format", {"name": "format", "log_name": "format_again"}])
    assert [f.__name__ for f in funcs] == ["format", "format_again"]


def test_trl_logs_our_names():
    from trl.trainer.utils import get_callable_name

    boxed = f"{EXAMPLE}:boxed_answer"
    funcs, _ = build_rewards(["correctness", {"name": "kimi", "num_generations": 4}, boxed,
                              {"name": boxed, "log_name": "boxed"}])
    assert [get_callable_name(f) for f in funcs] == ["correctness", "kimi", "boxed_answer", "boxed"]


def test_user_reward_from_a_file_path():
    reward = build_reward({"name": f"{EXAMPLE}:TokenBudget", "budget_tokens": 10, "penalty": 2.0})
    assert reward.__name__ == "token_budget"
    assert call(reward, ["a", "b", "c"], [5, 10, 15]) == pytest.approx([0.0, 0.0, -1.0])  # -2 * 5 / 10
    boxed = build_reward(f"{EXAMPLE}:boxed_answer")
    assert call(boxed, [lab(7), "<think> x </think> 7", "<think> \\boxed{ 7 }"], [1] * 3) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown parameter 'budget'; valid parameters: budget_tokens, "
                                         "penalty"):
        build_reward({"name": f"{EXAMPLE}:TokenBudget", "budget": 10})
    with pytest.raises(ValueError, match="has no 'Missing'; it defines .*'TokenBudget'"):
        build_reward(f"{EXAMPLE}:Missing")
    with pytest.raises(ValueError, match="not found"):
        build_reward("no/such/file.py:reward")


def test_user_reward_from_a_dotted_path(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    reward = build_reward({"name": "rewards.example_user_reward:TokenBudget", "budget_tokens": 4})
    assert call(reward, ["a"], [6]) == pytest.approx([-0.5])
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        build_reward("no_such_module:reward")


def test_user_function_with_parameters_is_bound(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        "def scaled(prompts, completions, completion_ids, scale=1.0, **kwargs):\n"
        "    return [scale * len(ids) for ids in completion_ids]\n"
    )
    reward = build_reward({"name": f"{path}:scaled", "scale": 0.5})
    assert isinstance(reward, BoundReward) and reward.__name__ == "scaled"
    assert call(reward, ["a", "b"], [2, 4]) == [1.0, 2.0]
    copy = pickle.loads(pickle.dumps(reward))
    assert copy(prompts=["p"], completions=["a"], completion_ids=[[1, 2]]) == [1.0]
    with pytest.raises(ValueError, match="unknown parameter 'completions'; valid parameters: scale"):
        build_reward({"name": f"{path}:scaled", "completions": 1})


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def test_register_reward(clean_registry):
    @register_reward("constant")
    class Constant:
        def __init__(self, value: float) -> None:
            self.__name__ = "constant"
            self.value = value

        def __call__(self, prompts, completions, completion_ids, **kwargs):
            return [self.value] * len(completions)

    assert "constant" in reward_names()
    assert call(build_reward({"name": "constant", "value": 2.0}), ["a"], [1]) == [2.0]
    register_reward("constant")(Constant)  # registering the same object again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_reward("constant")(Format)


# ---------------------------------------------------------------- pickling


def all_rewards():
    return [
        Correctness(mode="exact"),
        Format(),
        LGRPO(num_generations=2, alpha=0.5, max_completion_tokens=100, mode="exact"),
        KimiLength(num_generations=2, mode="exact"),
        TLDRLength(budgets={"short": 10}, mode="exact"),
        CosineLength(max_completion_tokens=100, mode="exact"),
        DAPOOverlong(max_completion_tokens=100, cache_tokens=20),
        L1Exact(mode="exact"),
        L1Max(alpha=0.01, mode="exact"),
        build_reward({"name": f"{EXAMPLE}:TokenBudget", "budget_tokens": 10}),
    ]


def test_every_reward_pickles_before_use():
    for reward in all_rewards():
        copy = pickle.loads(pickle.dumps(reward))
        assert type(copy) is type(reward) and copy.__name__ == reward.__name__


def test_every_reward_pickles_after_use_and_scores_the_same():
    batch = dict(completions=[lab(7), lab(8)], lengths=[10, 95], prompts=["p", "p"], answer=["7", "7"],
                 length_level=["short", "short"], target_tokens=[50, 50])
    for reward in all_rewards():
        before = call(reward, **batch)  # builds the grader where there is one
        copy = pickle.loads(pickle.dumps(reward))
        assert getattr(getattr(copy, "correctness", copy), "_grader", None) is None
        assert call(copy, **batch) == before, reward.__name__


# ---------------------------------------------------------------- inside TRL


def test_rewards_inside_a_real_grpo_step(tmp_path):
    """One GRPOTrainer step on the untrained lab model: TRL's call contract, names and group metrics."""
    from trl import GRPOConfig, GRPOTrainer

    from effreason.lab.datasets import lab_dataset
    from effreason.lab.model import build_lab_model
    from effreason.lab.tokenizer import build_lab_tokenizer

    seen: dict = {}

    def spy(prompts, completions, completion_ids, **kwargs):
        seen.update(n=len(completions), columns=sorted(kwargs), completion=completions[0])
        return [0.0] * len(completions)

    funcs, weights = build_rewards(
        [{"name": "correctness", "mode": "exact"}, {"name": "lgrpo", "alpha": 0.5, "mode": "exact"},
         {"name": "kimi", "mode": "exact"}, {"name": "dapo_overlong", "cache_tokens": 8}],
        context={"num_generations": 4, "max_completion_tokens": 16},
    )
    tokenizer = build_lab_tokenizer()
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      steps_per_generation=2, max_completion_length=16, max_steps=1, logging_steps=1,
                      report_to=[], bf16=False, use_cpu=True, save_strategy="no",
                      reward_weights=[*weights, 0.0])
    validate_group_layout(args, funcs)
    trainer = GRPOTrainer(model=build_lab_model(tokenizer), reward_funcs=[*funcs, spy], args=args,
                          train_dataset=lab_dataset("test", limit=8), processing_class=tokenizer)
    trainer.train()
    logs = trainer.state.log_history[0]
    assert seen["n"] == 8  # per_device_train_batch_size * steps_per_generation: two whole groups
    assert {"answer", "trainer_state", "log_metric"} <= set(seen["columns"])
    assert seen["completion"][0]["role"] == "assistant"  # conversational dataset
    for name in ("correctness", "lgrpo", "kimi", "dapo_overlong"):
        assert f"rewards/{name}/mean" in logs
    assert "reward/frac_all_correct_groups" in logs and "completions/tokens_median" in logs
