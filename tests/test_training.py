"""The RL recipes' library code: config parsing, stage overrides, data and levels, dynamic sampling, what
an output_dir may hold and when a stage's earlier work is reused."""

import importlib.util
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from effreason.errors import UserError
from effreason.evaluation.posttrain import EvalArguments
from effreason.format import with_instruction
from effreason.jsonl import write_json
from effreason.outputs import ConfigMismatchError, OutputExistsError
from effreason.training.args import (
    LGRPOArguments,
    TLDRArguments,
    TrainingDataArguments,
    command_line_keys,
    parse_recipe_args,
)
from effreason.training.builders import build_stage_rewards
from effreason.training.checkpoints import resume_point
from effreason.training.data import add_length_levels, level_reward_specs, parse_levels, training_dataset
from effreason.training.grpo import uninformative_groups
from effreason.training.output_dir import RUN_MANIFEST, check_stage_config, claim_output_dir
from effreason.training.stages import describe_stage, save_stage_config, stage_args, stage_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "configs"
LGRPO_CONFIGS = sorted(CONFIGS.glob("*/lgrpo*.yaml"))
TLDR_CONFIGS = sorted(CONFIGS.glob("*/tldr*.yaml"))
DEFAULT_LGRPO = CONFIGS / "lab" / "lgrpo.yaml"


def _offline(config: Path, benchmarks_dir: Path) -> list[str]:
    # bf16 needs a GPU to construct the config; real-model configs read the offline benchmark copies
    return ["--config", str(config), "--bf16", "false", "--data_dir", str(benchmarks_dir)]


@pytest.mark.parametrize("config", LGRPO_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_lgrpo_config_builds_its_stages(config, benchmarks_dir):
    argv = _offline(config, benchmarks_dir)
    recipe, eval_args, grpo, model = parse_recipe_args(LGRPOArguments, argv)
    assert model.model_name_or_path and isinstance(eval_args, EvalArguments)
    assert grpo.num_generations >= 2 and grpo.output_dir
    for name, block in (("stage1", recipe.stage1), ("stage2", recipe.stage2)):
        g, r = stage_args(grpo, recipe, block, f"/tmp/{name}", command_line_keys(argv))
        funcs, weights = build_stage_rewards(r.rewards, g, name)
        assert len(funcs) == len(weights) >= 1
        data = training_dataset(replace(r, dataset_limit=4))
        assert len(data) == 4 and data.column_names == ["id", "prompt", "answer"]


@pytest.mark.parametrize("config", TLDR_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_tldr_config_builds_its_rewards_and_levelled_data(config, benchmarks_dir):
    recipe, _, grpo, model = parse_recipe_args(TLDRArguments, _offline(config, benchmarks_dir))
    levels = parse_levels(recipe.levels)
    assert [lvl.name for lvl in levels] == ["short", "medium", "long"]
    funcs, _ = build_stage_rewards(level_reward_specs(recipe.rewards, levels), grpo, "rewards")
    assert funcs
    data = add_length_levels(training_dataset(replace(recipe, dataset_limit=4)), levels, seed=grpo.seed,
                             sampling=recipe.level_sampling)
    assert "length_level" in data.column_names


@pytest.mark.parametrize("recipe_type, config, key", [
    (TLDRArguments, DEFAULT_LGRPO, "stage"), (LGRPOArguments, CONFIGS / "lab" / "tldr.yaml", "levels")])
def test_one_recipes_keys_are_unknown_to_the_other(recipe_type, config, key):
    with pytest.raises(ValueError, match=f"unknown setting.*'{key}'"):
        parse_recipe_args(recipe_type, ["--config", str(config)])


def test_default_config_used_without_config_flag_and_cli_overrides_it():
    recipe, _, grpo, model = parse_recipe_args(LGRPOArguments, ["--max_steps", "3", "--stage", "2"], str(DEFAULT_LGRPO))
    assert model.model_name_or_path == "lab"
    assert grpo.max_steps == 3 and recipe.stage == "2"
    assert grpo.epsilon_high == 0.28 and grpo.loss_type == "dapo"


def test_yaml_typo_is_an_error_with_a_suggestion(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_name_or_path: lab\noutput_dir: x\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"learning_rat.*did you mean 'learning_rate'"):
        parse_recipe_args(LGRPOArguments, ["--config", str(cfg)])


def test_cli_typo_is_an_error():
    with pytest.raises(ValueError, match=r"the command line: 'warmup_stepz'"):
        parse_recipe_args(LGRPOArguments, ["--warmup_stepz", "4", "--output_dir", "x", "--bf16", "false"])


def test_reward_spec_json_on_the_command_line():
    recipe = TrainingDataArguments(rewards=['{"name": "lgrpo", "alpha": 0.5}', "format"])
    assert recipe.rewards == [{"name": "lgrpo", "alpha": 0.5}, "format"]
    with pytest.raises(ValueError, match="does not parse"):
        TrainingDataArguments(rewards=["{name: lgrpo"])


def test_stage_overrides_apply_to_a_copy_and_reject_typos_and_layout_keys():
    recipe, _, grpo, _ = parse_recipe_args(LGRPOArguments, ["--config", str(DEFAULT_LGRPO)])
    g1, r1 = stage_args(grpo, recipe, {"max_steps": 7, "rewards": ["correctness"], "entropy_coef": 0.01}, "/tmp/s1")
    assert (g1.max_steps, g1.entropy_coef, g1.output_dir) == (7, 0.01, "/tmp/s1")
    assert r1.rewards == ["correctness"]
    assert grpo.output_dir != "/tmp/s1" and grpo.entropy_coef != 0.01  # the original is untouched
    with pytest.raises(ValueError, match=r"max_step.*did you mean 'max_steps'"):
        stage_args(grpo, recipe, {"max_step": 3}, "/tmp/s1")
    with pytest.raises(ValueError, match="num_generations"):
        stage_args(grpo, recipe, {"num_generations": 4}, "/tmp/s1")
    with pytest.raises(ValueError, match="stage"):
        stage_args(grpo, recipe, {"stage": "2"}, "/tmp/s1")


def test_command_line_keys():
    assert command_line_keys(["--config", "x.yaml", "--stage", "2", "--max_steps=20", "--use_peft", "-v"]) == {
        "stage", "max_steps", "use_peft"}
    assert "shuffle_dataset" in command_line_keys(["--no_shuffle_dataset"])


def _stage(argv: list[str], stage: str):
    recipe, _, grpo, _ = parse_recipe_args(LGRPOArguments, argv, str(DEFAULT_LGRPO))
    block = recipe.stage1 if stage == "1" else recipe.stage2
    return stage_args(grpo, recipe, block, f"/tmp/stage{stage}", command_line_keys(argv))


def test_precedence_a_single_stage_gets_its_block():
    """The README's `--stage 2 --max_steps 20`: stage 2's block (the L-GRPO reward) applies; the flag wins."""
    g, r = _stage(["--stage", "2", "--max_steps", "20"], "2")
    assert r.rewards == [{"name": "lgrpo", "alpha": 0.5, "mode": "exact"}]
    assert (g.max_steps, g.learning_rate, r.dynamic_sampling) == (20, 2.0e-4, True)


def test_precedence_the_command_line_beats_a_stage_block():
    g1, _ = _stage(["--max_steps", "0"], "1")
    g2, r2 = _stage(["--max_steps", "0", "--learning_rate", "1e-5"], "2")
    assert g1.max_steps == g2.max_steps == 0 and g2.learning_rate == 1e-5
    assert r2.rewards[0]["name"] == "lgrpo"  # the rest of the block still applies
    g, _ = _stage([], "2")
    assert (g.max_steps, g.learning_rate) == (30, 2.0e-4)  # YAML block over YAML top level


def test_a_stage2_reward_typo_fails_at_start_up_naming_the_key(tmp_path):
    """Before any training (the recipe builds every stage's rewards first), in well under 30 s."""
    import subprocess
    import sys

    config = yaml.safe_load(DEFAULT_LGRPO.read_text())
    config["stage2"]["rewards"] = [{"name": "lgrpo", "alpah": 0.5}]
    config.update(output_dir=str(tmp_path / "out"), report_to="none")
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(yaml.safe_dump(config))
    clock = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "lgrpo.py"), "--config", str(cfg)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - clock
    assert proc.returncode != 0
    assert "stage2 rewards" in proc.stderr and "'alpah'" in proc.stderr and "did you mean 'alpha'" in proc.stderr
    assert not (tmp_path / "out" / "stage1" / "training_done.json").exists()
    assert seconds < 30, seconds


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
    spec, plain = level_reward_specs([{"name": "tldr", "mode": "exact"}, "correctness"], levels)
    assert spec["budgets"] == {"short": 48, "long": 200} and spec["lambdas"] == {"short": 2.0, "long": 1.0}
    assert plain == "correctness"
    floored = parse_levels({"long": {"budget": 320, "floor": 128}})
    assert level_reward_specs(["tldr"], floored)[0]["floors"] == {"long": 128}
    with pytest.raises(ValueError, match="long.floor"):
        parse_levels({"long": {"budget": 100, "floor": 100}})
    for bad, match in [({"short": {"budget": 0}}, "short.budget"), ({"short": {"budget": 5, "lamda": 1}}, "lamda"),
                       ({"short": 5}, "levels.short"), ({}, "levels must map")]:
        with pytest.raises(ValueError, match=match):
            parse_levels(bad)


def test_length_levels_are_seeded_uniform_and_in_the_prompt():
    recipe = TrainingDataArguments(dataset="lab", dataset_split="train", dataset_limit=300)
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
    data = training_dataset(TrainingDataArguments(dataset="lab", dataset_split="train", dataset_limit=5))
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
        training_dataset(TrainingDataArguments(dataset="nope"))


def test_uninformative_groups():
    adv = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0])
    assert uninformative_groups(adv, 4).tolist() == [True, False]
    assert uninformative_groups(adv, 2).tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="whole groups"):
        uninformative_groups(adv, 3)


def test_rewards_read_completions_with_the_think_their_prompt_opened():
    """R1-Distill's template ends the generation prompt with <think>; TRL decodes only the completion."""
    from types import SimpleNamespace

    from effreason.rewards import Correctness, Format
    from effreason.training.grpo import EfficientGRPOTrainer

    def trainer(template):
        tok = SimpleNamespace(apply_chat_template=lambda messages, **kw: template.format(messages[-1]["content"]))
        return SimpleNamespace(processing_class=tok, chat_template=None, chat_template_kwargs={})

    prompt = [{"role": "user", "content": "1+2?"}]
    cut, done = "1 + 2 = 3", "1 + 2 = 3</think> \\boxed{3}"
    r1, plain = trainer("<｜User｜>{}<｜Assistant｜><think>\n"), trainer("<|user|>{}<|assistant|>")
    in_context = EfficientGRPOTrainer._in_context
    assert in_context(r1, prompt, [{"role": "assistant", "content": cut}]) == [
        {"role": "assistant", "content": "<think>" + cut}]
    assert in_context(r1, "<｜User｜>1+2?<｜Assistant｜><think>\n", cut) == "<think>" + cut  # text prompts
    assert in_context(plain, prompt, [{"role": "assistant", "content": cut}]) == [{"role": "assistant", "content": cut}]
    completions = [in_context(r1, prompt, [{"role": "assistant", "content": c}]) for c in (cut, done)]
    correctness = Correctness(last_number_fallback=True)
    assert correctness([prompt] * 2, completions, [[0], [0]], answer=["3", "3"]) == [0.0, 1.0]
    assert Format()([prompt] * 2, completions, [[0], [0]]) == [0.0, 1.0]


def test_release_resets_accelerate_state_for_the_next_stages_trainer():
    """Under DeepSpeed a second Accelerator with a plugin is refused while the first one's state lives."""
    from types import SimpleNamespace

    from accelerate.state import AcceleratorState, PartialState

    from effreason.training.checkpoints import release

    PartialState()
    AcceleratorState._shared_state["distributed_type"] = "DEEPSPEED"  # as a first stage's trainer leaves it
    release(SimpleNamespace())
    assert AcceleratorState._shared_state == {} and PartialState().initialized  # the process group stays


def test_processes_that_formed_no_group_are_refused(monkeypatch):
    """multi_gpu.yaml on a CPU machine: two processes, each alone, would train into one output_dir."""
    from types import SimpleNamespace

    from effreason.training.launch import check_process_group

    alone, together = SimpleNamespace(num_processes=1, distributed_type="NO"), SimpleNamespace(num_processes=2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    check_process_group(alone)  # python recipes/x.py
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_process_group(together)  # torchrun, DeepSpeed: one group of two
    with pytest.raises(ValueError, match=r"2 processes were launched \(WORLD_SIZE=2\) but accelerate joined 1.*torchrun"):
        check_process_group(alone)


def test_resume_point(tmp_path):
    assert resume_point(tmp_path, None) is None
    assert resume_point(tmp_path, True) is None  # nothing saved yet: fresh start
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-12").mkdir()
    assert resume_point(tmp_path, "true").endswith("checkpoint-12")
    assert resume_point(tmp_path, str(tmp_path / "checkpoint-5")).endswith("checkpoint-5")
    with pytest.raises(ValueError, match="not a checkpoint"):
        resume_point(tmp_path, str(tmp_path / "missing"))


def test_recipe_arguments_reject_bad_stage_and_sampling():
    with pytest.raises(ValueError, match="stage must be"):
        LGRPOArguments(stage="3")
    with pytest.raises(ValueError, match="level_sampling"):
        TLDRArguments(level_sampling="some")
    assert replace(EvalArguments(), eval_benchmark="none").eval_benchmark is None


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


def test_training_library_stays_below_the_lab_and_holds_no_recipes_module():
    package = ROOT / "effreason"
    assert not list(package.rglob("recipes.py"))
    for path in (package / "training").glob("*.py"):
        assert "effreason.lab" not in path.read_text(), path


def test_evaluate_model_builds_the_eval_config_and_reevaluates_other_settings(monkeypatch, tmp_path):
    from effreason.evaluation import posttrain, runner
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.store import ConfigMismatchError

    seen = []

    def fake_run_eval(cfg):
        seen.append(cfg)
        if len(seen) == 1:
            raise ConfigMismatchError(tmp_path, {"model": ("a", "b")})
        return {"accuracy": 1.0, "tokens_mean": 3.0}

    monkeypatch.setattr(runner, "run_eval", fake_run_eval)
    args = EvalArguments(eval_limit=6, eval_max_new_tokens=64)
    posttrain.evaluate_model(args, tmp_path, "start", "lab", instruction="level short", data_dir="/data")
    expected = EvalConfig(output=str(tmp_path / "eval" / "start"), benchmark="lab", split="test", limit=6,
                          data_dir="/data", model="lab", adapter=None, instruction="level short", backend="hf",
                          max_new_tokens=64, batch_size=None, progress=False)
    assert seen[0] == expected and seen[1] == replace(expected, overwrite=True)
    with_budgets = replace(args, eval_budgets=[32, 16], eval_methods={"budget_forcing": {"budget_answer_tokens": 16}})
    seen.clear()
    posttrain.evaluate_model(with_budgets, tmp_path, "b", "lab")
    assert seen[0].budgets == [16, 32] and seen[0].budget_answer_tokens == 16


# ---------------------------------------------------------------- output_dir: whose it is, what is reused


def test_an_output_dir_is_claimed_new_or_empty_and_refused_when_not_the_recipes(tmp_path):
    new, empty, foreign = tmp_path / "new", tmp_path / "empty", tmp_path / "foreign"
    claim_output_dir(new, "recipes/lgrpo.py")
    assert json.loads((new / RUN_MANIFEST).read_text())["written_by"] == "recipes/lgrpo.py"
    (new / "stage1").mkdir()
    claim_output_dir(new, "recipes/lgrpo.py")  # its own folder, again
    with pytest.raises(OutputExistsError, match=r"new holds a run of recipes/lgrpo.py, not of recipes/tldr.py: "
                                                "choose another output_dir"):
        claim_output_dir(new, "recipes/tldr.py")
    empty.mkdir()
    claim_output_dir(empty, "recipes/sft.py")
    assert (empty / RUN_MANIFEST).is_file()
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"foreign is not empty and was not written by recipes/sft.py.*"
                                                "choose another path"):
        claim_output_dir(foreign, "recipes/sft.py")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]  # nothing was written


def test_a_run_from_before_manifests_is_adopted_by_the_recipe_that_made_it(tmp_path):
    lgrpo, tldr, sft = tmp_path / "lgrpo", tmp_path / "tldr", tmp_path / "sft"
    write_json(lgrpo / "stage1" / "stage_config.json", {"stage": "stage1"})  # stage: both
    write_json(tldr / "stage_config.json", {"stage": "tldr"})
    write_json(sft / "sft_config.json", {})
    with pytest.raises(OutputExistsError, match="holds a run of recipes/lgrpo.py, not of recipes/tldr.py"):
        claim_output_dir(lgrpo, "recipes/tldr.py")
    assert not (lgrpo / RUN_MANIFEST).exists()
    for folder, recipe in ((lgrpo, "recipes/lgrpo.py"), (tldr, "recipes/tldr.py"), (sft, "recipes/sft.py")):
        claim_output_dir(folder, recipe)
        assert json.loads((folder / RUN_MANIFEST).read_text())["written_by"] == recipe


def _stage_config(argv: list[str], stage: str, out: Path, weights: str = "lab-weights") -> dict:
    """Stage ``stage``'s settings as the lgrpo recipe saves them, for ``argv`` on the lab default."""
    recipe, _, grpo, model = parse_recipe_args(LGRPOArguments, argv, str(DEFAULT_LGRPO))
    block = recipe.stage1 if stage == "1" else recipe.stage2
    g, r = stage_args(grpo, recipe, block, str(out), command_line_keys(argv))
    return stage_config(describe_stage(f"stage{stage}", block, command_line_keys(argv)), g, r, model, weights)


def test_a_finished_stage_or_a_checkpoint_is_reused_only_with_the_same_settings(tmp_path):
    out = tmp_path / "stage1"
    config, faster = _stage_config([], "1", out), _stage_config(["--learning_rate", "1e-3"], "1", out)
    check_stage_config(out, faster)  # nothing to reuse: any settings
    save_stage_config(out, config)
    check_stage_config(out, faster)  # saved settings alone (a run that failed before training) reuse nothing
    for make_work in (lambda: (out / "checkpoint-3").mkdir(),
                      lambda: write_json(out / "training_done.json", {"global_step": 10})):
        make_work()
        # where outputs go, logging, reporting and checkpoint cadence do not shape the weights
        check_stage_config(out, _stage_config(["--logging_steps", "7", "--save_steps", "2", "--report_to", "none",
                                               "--run_name", "x", "--resume_from_checkpoint", "true"], "1", out))
        with pytest.raises(ConfigMismatchError, match=r"stage1 holds a run that differs from this one "
                                                      r"\(grpo.learning_rate: 0.0003 -> 0.001\); use another "
                                                      r"output_dir, or delete .*stage1 to train it again") as e:
            check_stage_config(out, faster)
        assert e.value.differences == {"grpo.learning_rate": (3e-4, 1e-3)}
    assert json.loads((out / "stage_config.json").read_text())["grpo"]["learning_rate"] == 3e-4  # not rewritten
    with pytest.raises(ConfigMismatchError, match=r"start_weights: .?lab-weights.? -> .?rebuilt-lab"):
        check_stage_config(out, _stage_config([], "1", out, weights="rebuilt-lab"))  # same settings, other start
    length_reward = {**config, "recipe": {**config["recipe"], "rewards": [{"name": "lgrpo", "alpha": 0.5}]}}
    with pytest.raises(ConfigMismatchError, match=r"recipe.rewards: \['correctness'\] -> \[\{'name': 'lgrpo'"):
        check_stage_config(out, length_reward)
    (out / "stage_config.json").unlink()
    with pytest.raises(UserError, match=r"holds an earlier run \(training_done.json, checkpoint-3\) but no "
                                        r"readable stage_config.json"):
        check_stage_config(out, config)


def test_a_stage_is_reused_only_after_the_earlier_stage_it_started_from(tmp_path):
    """lgrpo ``stage: both``: a finished stage 2 whose stage 1 was deleted (to retrain it) is stale too; TLDR's
    level warm-up is reused like a finished stage."""
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    config = _stage_config([], "2", stage2)
    save_stage_config(stage2, config)
    write_json(stage2 / "training_done.json", {"global_step": 30})
    with pytest.raises(UserError, match=r"stage2 holds an earlier run that started from a finished .*stage1, which "
                                        "is gone or training again: use another output_dir, or delete"):
        check_stage_config(stage2, config, after=[stage1])
    write_json(stage1 / "training_done.json", {"global_step": 10})
    check_stage_config(stage2, config, after=[stage1])
    warmup, tldr = tmp_path / "level_warmup", tmp_path / "tldr"
    save_stage_config(tldr, config)
    warmup.mkdir()
    other = {**config, "recipe": {**config["recipe"], "dataset_limit": 5}}
    check_stage_config(tldr, other)
    with pytest.raises(ConfigMismatchError, match=r"recipe.dataset_limit: None -> 5"):
        check_stage_config(tldr, other, reused=[warmup])


def test_the_lgrpo_recipe_refuses_a_stale_stage_before_any_work(tmp_path):
    """In seconds, before data or models load, and without overwriting the stage's saved settings."""
    spec = importlib.util.spec_from_file_location("recipe_lgrpo", ROOT / "recipes" / "lgrpo.py")
    lgrpo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lgrpo)
    out = tmp_path / "run"
    argv = ["--output_dir", str(out), "--stage", "1", "--report_to", "none", "--resume_from_checkpoint", "true"]
    claim_output_dir(out, "recipes/lgrpo.py")  # as a finished run with another learning rate left it
    save_stage_config(out, _stage_config([*argv, "--learning_rate", "1e-3"], "1", out))
    write_json(out / "training_done.json", {"global_step": 10})
    saved = (out / "stage_config.json").read_text()
    with pytest.raises(ConfigMismatchError, match=r"grpo.learning_rate: 0.001 -> 0.0003"):
        lgrpo.main(argv)
    assert (out / "stage_config.json").read_text() == saved


def test_start_weights_tell_a_rebuilt_model_from_the_one_a_run_started_from(tmp_path):
    from effreason.training.stages import start_weights

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    before = start_weights(str(model))
    assert start_weights(str(model)) == before
    (model / "model.safetensors").write_bytes(b"\1" * 64)  # same size, other weights
    assert start_weights(str(model)) != before
    assert start_weights("lab") == start_weights(str(Path(__file__).resolve().parents[1] / "effreason/lab/checkpoint"))
