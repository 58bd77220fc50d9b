"""SFT on pruned traces (recipes/sft.py, effreason.sft): data, completion-only masking, config, a tiny run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from effreason.format import MATH_INSTRUCTION, chat_prompt, chat_prompt_ids
from effreason.grading import Grader
from effreason.jsonl import DataError, write_json
from effreason.lab.datasets import lab_problems
from effreason.sft.args import SFTRecipeArguments, parse_sft_args
from effreason.sft.data import build_traces, check_settings, lab_trace_rows, sft_dataset
from effreason.sft.report import catch_figures, correction_pairs, removal_figures, target_figures

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "recipes" / "configs").glob("*/sft*.yaml"))


def load_recipe():
    spec = importlib.util.spec_from_file_location("recipe_sft", REPO / "recipes" / "sft.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- data


def test_lab_trace_rows_are_verbose_correct_and_seeded():
    rows = lab_trace_rows(20, style="verbose", seed=3)
    problems = lab_problems("train")[:20]
    assert [r["problem"] for r in rows] == [p.text() for p in problems]
    assert [r["answer"] for r in rows] == [str(p.answer) for p in problems]
    with Grader("exact") as grader:
        assert all(grader.grade(r["completion"], r["answer"]).correct for r in rows)
    assert sum(r["completion"].count("wait , let me check") for r in rows) > 20  # verbose: ~one check per step
    assert rows == lab_trace_rows(20, style="verbose", seed=3)
    assert rows != lab_trace_rows(20, style="verbose", seed=4)
    concise = lab_trace_rows(20, style="concise", seed=3)
    assert sum(len(r["completion"]) for r in concise) < sum(len(r["completion"]) for r in rows)


def test_sft_dataset_is_conversational_prompt_completion():
    rows = [{"problem": "start 1 ; s1 + 2 ; ( mod 11 )", "completion": "<think> a </think> b",
             "pruned_completion": "<think> </think> b"}]
    ds = sft_dataset(rows, "pruned_completion")
    assert ds[0]["prompt"] == chat_prompt(rows[0]["problem"])
    assert ds[0]["completion"] == [{"role": "assistant", "content": "<think> </think> b"}]
    ds = sft_dataset(rows, "completion", instruction="math", system_prompt="be brief")
    assert ds[0]["prompt"] == [{"role": "system", "content": "be brief"},
                               {"role": "user", "content": f"{rows[0]['problem']}\n{MATH_INSTRUCTION}"}]


def test_sft_rows_keep_the_thinking_under_an_r1_style_chat_template(lab_tokenizer):
    """R1-Distill's template drops assistant thinking and opens <think> in the generation prompt: TRL's
    conversational rows would train on the answer alone, so the rows become text that keeps it."""
    rows = [{"problem": "start 1 ; s1 + 2 ; ( mod 11 )", "completion": "<think> s1 1 + 2 = 3 ; </think> the answer is 3"}]
    assert sft_dataset(rows, "completion", tokenizer=lab_tokenizer)[0] == sft_dataset(rows, "completion")[0]
    tok = lab_tokenizer.__class__(tokenizer_object=lab_tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    tok.chat_template = ("{% for m in messages %}{% set c = m['content'] %}{% if m['role'] == 'assistant' %}"
                         "{% set c = c.split('</think>')[-1] %}{% endif %}<|im_start|> {{ c }} <|im_end|> "
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|> <think> {% endif %}")
    row = sft_dataset(rows, "completion", tokenizer=tok)[0]
    assert row == {"prompt": "<|im_start|> start 1 ; s1 + 2 ; ( mod 11 ) <|im_end|> <|im_start|> <think> ",
                   "completion": "s1 1 + 2 = 3 ; </think> the answer is 3"}


def test_check_settings_refuses_other_data_settings(tmp_path):
    check_settings(tmp_path, {"prune_ratio": 0.5, "num_traces": 10})
    check_settings(tmp_path, {"prune_ratio": 0.5, "num_traces": 10})  # same settings: fine
    with pytest.raises(ValueError, match=r"other settings \(prune_ratio: \[0.5\] then, \[0.7\] now\)"):
        check_settings(tmp_path, {"prune_ratio": 0.7, "num_traces": 10})


def test_a_finished_variant_is_skipped_only_with_the_same_settings(tmp_path):
    """Its data, prompt, SFT and start-model settings (``stage_config.json``), not only ``training_done.json``."""
    from effreason.outputs import ConfigMismatchError
    from effreason.sft.train import variant_config
    from effreason.training.output_dir import check_stage_config
    from effreason.training.stages import save_stage_config

    _, _, sft, model = parse_sft_args(["--output_dir", str(tmp_path), "--report_to", "none"],
                                      str(REPO / "recipes" / "configs" / "lab" / "sft.yaml"))
    pir = tmp_path / "pir"

    def config(ratio: float = 0.5, **prompt) -> dict:
        return variant_config(sft, model, pir, "pir", {"prune_ratio": ratio, "num_traces": 8},
                              {"instruction": None, "system_prompt": None, **prompt})

    assert (config()["sft"]["output_dir"], config()["sft"]["run_name"]) == (str(pir), f"{sft.run_name}-pir")
    save_stage_config(pir, config())
    write_json(pir / "training_done.json", {"global_step": 2})
    check_stage_config(pir, config())
    with pytest.raises(ConfigMismatchError, match=r"pir holds a run .*\(data.prune_ratio: 0.5 -> 0.7\)"):
        check_stage_config(pir, config(0.7))
    with pytest.raises(ConfigMismatchError, match=r"prompt.instruction: None -> 'math'"):
        check_stage_config(pir, config(instruction="math"))


def test_traces_from_a_dataset_folder_with_mapped_columns(tmp_path):
    from datasets import Dataset

    think = "<think> 2 and 2.\n\nWait, check: 4. </think> \\boxed{4}"
    rows = [{"question": f"q{i}", "completion": think if i != 1 else "<think> cut", "final": "4"} for i in range(4)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    args = {"traces": str(tmp_path / "ds"), "num_traces": 3, "style": "verbose", "seed": 0,
            "columns": ["problem=question", "answer=final"]}
    with pytest.raises(DataError, match=r"ds:2: field 'completion': no closed </think>"):
        build_traces(tmp_path / "a.jsonl", **args)
    assert not (tmp_path / "a.jsonl").exists()
    got = build_traces(tmp_path / "a.jsonl", **args, skip_bad_rows=True)  # rows 1 and 3 of the first 3
    assert [(r["id"], r["problem"], r["answer"]) for r in got] == [("ds:1", "q0", "4"), ("ds:3", "q2", "4")]
    with pytest.raises(ValueError, match="is not FIELD=COLUMN"):
        SFTRecipeArguments(traces=str(tmp_path / "ds"), traces_columns=["problem:question"])


# ---------------------------------------------------------------- completion-only loss


def test_prompt_tokens_are_masked_out_of_the_loss(untrained_lab_dir, tmp_path):
    from trl import ModelConfig, SFTConfig

    from effreason.models import load_tokenizer
    from effreason.sft.train import build_sft_trainer

    rows = lab_trace_rows(3)
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_steps=1,
                     per_device_train_batch_size=2)
    trainer = build_sft_trainer(args, ModelConfig(model_name_or_path=str(untrained_lab_dir)),
                                sft_dataset(rows, "completion"), str(untrained_lab_dir))
    tokenizer = load_tokenizer(untrained_lab_dir)
    for row, example in zip(rows, trainer.train_dataset, strict=True):
        prompt = chat_prompt_ids(tokenizer, chat_prompt(row["problem"]))
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert example["input_ids"] == prompt + completion
        assert example["labels"] == [-100] * len(prompt) + completion
    with pytest.raises(ValueError, match="completion_only_loss"):
        build_sft_trainer(SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True,
                                    completion_only_loss=False),
                          ModelConfig(model_name_or_path=str(untrained_lab_dir)), sft_dataset(rows, "completion"),
                          str(untrained_lab_dir))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_parse(config):
    import torch

    # GPU configs ask for bf16, which TrainingArguments refuses on a CPU-only machine
    cpu = [] if torch.cuda.is_available() else ["--bf16", "false"]
    recipe, eval_args, sft, model = parse_sft_args(["--config", str(config), *cpu])
    assert isinstance(recipe, SFTRecipeArguments) and sft.output_dir and model.model_name_or_path
    assert eval_args.eval_benchmark in ("lab", "math500")
    assert sft.completion_only_loss is not False


def test_config_typos_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model_name_or_path: lab\noutput_dir: x\nlearning_rat: 1.0e-3\nprune_ration: 0.5\n")
    with pytest.raises(ValueError, match=r"bad.yaml: 'learning_rat' \(did you mean 'learning_rate'"
                                         r".*'prune_ration' \(did you mean 'prune_ratio'"):
        parse_sft_args(["--config", str(path)])
    with pytest.raises(ValueError, match=r"the command line: 'prune_ratoi'"):
        parse_sft_args(["--prune_ratoi", "0.3"], REPO / "recipes" / "configs" / "lab" / "sft.yaml")
    with pytest.raises(ValueError, match="variants"):
        SFTRecipeArguments(variants=["unpruned", "pirr"])
    with pytest.raises(ValueError, match="prune_ratio"):
        SFTRecipeArguments(prune_ratio=1.5)
    with pytest.raises(ValueError, match="trace_style must be one of"):
        SFTRecipeArguments(trace_style="slipy")
    with pytest.raises(ValueError, match="needs traces: lab"):
        SFTRecipeArguments(traces="mine.jsonl", lab_slip_warmup_steps=10)
    (tmp_path / "m.yaml").write_text("verification: [hold on]\nwindow_word: 3\n")
    with pytest.raises(ValueError, match=r"m.yaml: 'window_word' \(did you mean 'window_words'"):
        SFTRecipeArguments(prune_markers=str(tmp_path / "m.yaml"))


# ---------------------------------------------------------------- figures


def test_correction_pairs_and_what_a_pruning_split():
    ec, p, v = "error_correction", "progressive", "verification"
    assert correction_pairs([p, ec, ec, v, ec, ec, ec]) == [(1, 2), (4, 5)]

    def step(label, removed):
        return {"label": label, "removed": removed, "text": "", "pir": None}

    rows = [{"steps": [step(p, False), step(ec, False), step(ec, True), step(v, True)]},  # wrong kept
            {"steps": [step(ec, True), step(ec, False), step(v, False)]}]  # correction kept
    got = removal_figures(rows)
    assert got["removed_by_label"] == {ec: 2, v: 1}
    assert got["functional_by_label"] == {ec: 4, v: 2}
    assert (got["correction_pairs"], got["pairs_wrong_step_kept_correction_removed"],
            got["pairs_wrong_step_removed_correction_kept"]) == (2, 1, 1)


def test_catch_figures_count_the_kept_catching_checks():
    def step(text, removed, label="verification"):
        return {"label": label, "removed": removed, "text": text, "pir": None}

    catch = "let me double check from the start : 3 - 5 = 9 . that is wrong ; "
    rows = [{"steps": [step("s1 3 - 5 = 2 ;", False, "progressive"), step("wait , let me check s1 : 3 - 5 = 2 . yes ;", True),
                       step(catch, False)]},
            {"steps": [step("s1 3 - 5 = 2 ;", False, "progressive"), step(catch, True)]}]
    assert catch_figures(rows) == {"catching_checks": 2, "catching_checks_kept": 1, "other_functional_kept_share": 0.0}
    assert catch_figures([{"steps": [step("s1 1 + 1 = 2 ;", False, "progressive")]}]) == {}


def test_target_figures():
    runs = {"unpruned": {"accuracy": 0.99, "tokens_mean": 150.0}, "pir": {"accuracy": 0.985, "tokens_mean": 90.0},
            "random": {"accuracy": 0.985, "tokens_mean": 100.0}}
    got = target_figures(runs)
    assert got["pir_token_reduction"] == pytest.approx(0.4)
    assert got["pir_accuracy_delta_points"] == pytest.approx(-0.5)
    assert got["pir_shorter_and_as_accurate"] and got["pir_beats_random"]  # a tie on accuracy, fewer tokens
    runs["pir"]["accuracy"] = 0.97  # 2 points below unpruned, 1.5 below random
    got = target_figures(runs)
    assert not got["pir_shorter_and_as_accurate"] and not got["pir_beats_random"]


# ---------------------------------------------------------------- the recipe, end to end


@pytest.mark.slow
def test_tiny_sft_run_end_to_end_and_resume(untrained_lab_dir, tmp_path):
    recipe = load_recipe()
    out = tmp_path / "run"
    argv = ["--model_name_or_path", str(untrained_lab_dir), "--output_dir", str(out), "--num_traces", "8",
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none",
            "--eval_limit", "6", "--eval_max_new_tokens", "48", "--eval_start", "false", "--logging_steps", "1",
            "--lab_slip_warmup_steps", "2"]
    assert recipe.main(argv) == 0
    start = out / "start_model"  # the slippy warm-up: every variant starts from it, PIR scores with it
    assert (start / "model.safetensors").is_file() and not (out / "start_model.partial").exists()
    assert json.loads((out / "data" / "settings.json").read_text())["prune_scorer"] == str(start)
    for name in ("unpruned", "pir", "random"):
        done = json.loads((out / name / "training_done.json").read_text())
        assert done["global_step"] == 2 and (out / name / "model.safetensors").is_file()
        assert not list((out / name).glob("*.bin"))  # the saved model holds no pickle
        assert done["start"] == str(start)
        assert json.loads((out / "eval" / name / "results.json").read_text())["n"] == 6
    pir_rows = [json.loads(line) for line in (out / "data" / "pir.jsonl").read_text().splitlines()]
    assert len(pir_rows) == 8 and {r["pir_target"] for r in pir_rows} == {"gold"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["eval"]) == {"unpruned", "pir", "random"}
    assert {"pir_token_reduction", "pir_beats_random"} <= set(summary["targets"])
    assert summary["data"]["pir"]["tokens_mean"] < summary["data"]["unpruned"]["tokens_mean"]
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file()
    assert json.loads((out / "sft_config.json").read_text())["recipe"]["num_traces"] == 8
    # a re-run resumes: every stage is found done, nothing is retrained
    stamp = (out / "pir" / "model.safetensors").stat().st_mtime_ns
    assert recipe.main(argv) == 0
    assert (out / "pir" / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="prune_ratio"):
        recipe.main([*argv, "--prune_ratio", "0.9"])


def test_lora_variant_saves_an_adapter(untrained_lab_dir, tmp_path):
    recipe = load_recipe()
    out = tmp_path / "lora"
    assert recipe.main(["--model_name_or_path", str(untrained_lab_dir), "--output_dir", str(out), "--num_traces",
                        "4", "--variants", "random", "--max_steps", "1", "--per_device_train_batch_size", "4",
                        "--report_to", "none", "--eval_benchmark", "none", "--use_peft", "true", "--lora_r", "4",
                        "--lora_target_modules", "q_proj", "v_proj", "--lab_slip_warmup_steps", "0"]) == 0
    done = json.loads((out / "random" / "training_done.json").read_text())
    assert done["peft"] and (out / "random" / "adapter_config.json").is_file()
    from effreason.sft.train import trained_model

    assert trained_model(done) == (done["start"], str(out / "random"))
