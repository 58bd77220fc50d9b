"""The RL recipes' library code: config parsing, stage overrides, data and levels, dynamic sampling."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from effreason.format import with_instruction
from effreason.training.args import RecipeArguments, parse_recipe_args
from effreason.training.data import add_length_levels, parse_levels, training_dataset
from effreason.training.grpo import uninformative_groups
from effreason.training.recipes import _with_levels
from effreason.training.run import resume_point, stage_args

ROOT = Path(__file__).resolve().parents[1]
RL_CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*/lgrpo*.yaml")) + sorted(
    (ROOT / "recipes" / "configs").glob("*/tldr*.yaml"))


@pytest.mark.parametrize("config", RL_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_rl_config_parses(config):
    # bf16 needs a GPU to construct the config; everything else is checked as shipped
    recipe, grpo, model = parse_recipe_args(["--config", str(config), "--bf16", "false"])
    assert model.model_name_or_path
    assert grpo.num_generations >= 2 and grpo.output_dir
    assert recipe.rewards or recipe.stage == "both"
    for overrides in (recipe.stage1, recipe.stage2):
        stage_args(grpo, recipe, overrides, "/tmp/x")  # raises on a typo in a stage section
    if recipe.levels:
        assert [lvl.name for lvl in parse_levels(recipe.levels)] == ["short", "medium", "long"]


def test_default_config_used_without_config_flag_and_cli_overrides_it():
    default = ROOT / "recipes" / "configs" / "lab" / "lgrpo.yaml"
    recipe, grpo, model = parse_recipe_args(["--max_steps", "3", "--stage", "2"], str(default))
    assert model.model_name_or_path == "lab"
    assert grpo.max_steps == 3 and recipe.stage == "2"
    assert grpo.epsilon_high == 0.28 and grpo.loss_type == "dapo"


def test_yaml_typo_is_an_error_with_a_suggestion(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_name_or_path: lab\noutput_dir: x\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"learning_rat.*did you mean 'learning_rate'"):
        parse_recipe_args(["--config", str(cfg)])


def test_cli_typo_is_an_error():
    with pytest.raises(ValueError, match=r"the command line: 'warmup_stepz'"):
        parse_recipe_args(["--warmup_stepz", "4", "--output_dir", "x", "--bf16", "false"])


def test_reward_spec_json_on_the_command_line():
    recipe = RecipeArguments(rewards=['{"name": "lgrpo", "alpha": 0.5}', "format"])
    assert recipe.rewards == [{"name": "lgrpo", "alpha": 0.5}, "format"]
    with pytest.raises(ValueError, match="does not parse"):
        RecipeArguments(rewards=["{name: lgrpo"])


def test_stage_overrides_apply_to_a_copy_and_reject_typos_and_layout_keys():
    default = ROOT / "recipes" / "configs" / "lab" / "lgrpo.yaml"
    recipe, grpo, _ = parse_recipe_args(["--config", str(default)])
    g1, r1 = stage_args(grpo, recipe, {"max_steps": 7, "rewards": ["correctness"], "entropy_coef": 0.01}, "/tmp/s1")
    assert (g1.max_steps, g1.entropy_coef, g1.output_dir) == (7, 0.01, "/tmp/s1")
    assert r1.rewards == ["correctness"]
    assert grpo.output_dir != "/tmp/s1" and grpo.entropy_coef != 0.01  # the original is untouched
    with pytest.raises(ValueError, match=r"max_step.*did you mean 'max_steps'"):
        stage_args(grpo, recipe, {"max_step": 3}, "/tmp/s1")
    with pytest.raises(ValueError, match="num_generations"):
        stage_args(grpo, recipe, {"num_generations": 4}, "/tmp/s1")


def test_with_instruction_appends_to_the_last_user_message():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]
    out = with_instruction(msgs, "level short")
    assert out[1]["content"] == "q\nlevel short" and msgs[1]["content"] == "q"
    assert with_instruction(msgs, None) == msgs
    with pytest.raises(ValueError, match="no user message"):
        with_instruction([{"role": "system", "content": "s"}], "x")


def test_levels_parse_validate_and_fill_the_tldr_reward():
    levels = parse_levels({"short": {"budget": 48, "lambda": 2.0}, "long": {"budget": 200}})
    assert [(lv.name, lv.budget, lv.lam, lv.instruction) for lv in levels] == [
        ("short", 48, 2.0, "level short"), ("long", 200, 1.0, "level long")]
    spec = _with_levels({"name": "tldr", "mode": "exact"}, levels)
    assert spec["budgets"] == {"short": 48, "long": 200} and spec["lambdas"] == {"short": 2.0, "long": 1.0}
    assert _with_levels("correctness", levels) == "correctness"
    floored = parse_levels({"long": {"budget": 320, "floor": 128}})
    assert _with_levels("tldr", floored)["floors"] == {"long": 128}
    with pytest.raises(ValueError, match="long.floor"):
        parse_levels({"long": {"budget": 100, "floor": 100}})
    for bad, match in [({"short": {"budget": 0}}, "short.budget"), ({"short": {"budget": 5, "lamda": 1}}, "lamda"),
                       ({"short": 5}, "levels.short"), ({}, "levels must map")]:
        with pytest.raises(ValueError, match=match):
            parse_levels(bad)


def test_length_levels_are_seeded_uniform_and_in_the_prompt():
    recipe = RecipeArguments(dataset="lab", dataset_split="train", dataset_limit=300)
    data = training_dataset(recipe)
    assert data.column_names == ["id", "prompt", "answer"] and len(data) == 300
    levels = parse_levels({"short": {"budget": 48}, "medium": {"budget": 96}, "long": {"budget": 192}})
    a, b = add_length_levels(data, levels, seed=3), add_length_levels(data, levels, seed=3)
    assert a["length_level"] == b["length_level"]
    counts = {name: a["length_level"].count(name) for name in ("short", "medium", "long")}
    assert all(70 <= c <= 130 for c in counts.values()), counts
    for row, orig in zip(a.select(range(20)), data.select(range(20)), strict=True):
        assert row["prompt"][-1]["content"] == f"{orig['prompt'][-1]['content']}\nlevel {row['length_level']}"


def test_all_levels_sampling_keeps_a_problems_levels_consecutive():
    data = training_dataset(RecipeArguments(dataset="lab", dataset_split="train", dataset_limit=5))
    levels = parse_levels({"short": {"budget": 48}, "long": {"budget": 192}})
    out = add_length_levels(data, levels, seed=1, sampling="all")
    assert len(out) == 10 and out["length_level"] == ["short", "long"] * 5
    ids = out["id"]
    assert all(ids[i] == ids[i + 1] for i in range(0, 10, 2)) and sorted(set(ids)) == sorted(data["id"])
    assert ids[::2] != data["id"]  # problems shuffled (seeded)
    with pytest.raises(ValueError, match="level_sampling"):
        add_length_levels(data, levels, seed=1, sampling="some")


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="neither a benchmark"):
        training_dataset(RecipeArguments(dataset="nope"))


def test_uninformative_groups():
    adv = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0])
    assert uninformative_groups(adv, 4).tolist() == [True, False]
    assert uninformative_groups(adv, 2).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="whole groups"):
        uninformative_groups(adv, 3)


def test_resume_point(tmp_path):
    assert resume_point(tmp_path, None) is None
    assert resume_point(tmp_path, True) is None  # nothing saved yet: fresh start
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-12").mkdir()
    assert resume_point(tmp_path, "true").endswith("checkpoint-12")
    assert resume_point(tmp_path, str(tmp_path / "checkpoint-5")).endswith("checkpoint-5")
    with pytest.raises(ValueError, match="not a checkpoint"):
        resume_point(tmp_path, str(tmp_path / "missing"))


def test_recipe_arguments_reject_bad_stage():
    with pytest.raises(ValueError, match="stage must be"):
        RecipeArguments(stage="3")
    assert replace(RecipeArguments(), eval_benchmark="none").eval_benchmark is None


def test_reinit_token_embeddings_makes_unread_words_distinct(lab_tokenizer):
    from effreason.lab.model import build_lab_model
    from effreason.training.embeddings import reinit_token_embeddings

    model = build_lab_model(lab_tokenizer)
    words = ["short", "medium", "long"]
    ids = [lab_tokenizer.convert_tokens_to_ids(w) for w in words]
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb[ids] = emb[ids[0]].clone()  # collapsed, as in the trained lab model
    other = emb[5].clone()
    assert reinit_token_embeddings(model, lab_tokenizer, words, seed=0) == ids
    rows = torch.nn.functional.normalize(emb[ids], dim=1)
    cos = rows @ rows.T
    assert cos[~torch.eye(3, dtype=torch.bool)].abs().max() < 0.5
    assert torch.equal(emb[5], other)  # other rows untouched
    with pytest.raises(ValueError, match="not a single known token"):
        reinit_token_embeddings(model, lab_tokenizer, ["shortish"], seed=0)


def test_eval_instruction_reaches_benchmark_prompts(lab_tokenizer, tmp_path):
    """TLDR evaluates each level by appending its instruction to the benchmark's prompts."""
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.prompts import load_problems

    plain = load_problems(EvalConfig(output=str(tmp_path), benchmark="lab", limit=3, model="lab"), lab_tokenizer)
    cfg = EvalConfig(output=str(tmp_path), benchmark="lab", limit=3, model="lab", instruction="level short")
    levelled = load_problems(cfg, lab_tokenizer)
    for a, b in zip(plain.problems, levelled.problems, strict=True):
        assert b.prompt_ids[: len(a.prompt_ids) - 3] == a.prompt_ids[: len(a.prompt_ids) - 3]
        assert "level short" in b.prompt and "level short" not in a.prompt
        assert len(b.prompt_ids) == len(a.prompt_ids) + 2
