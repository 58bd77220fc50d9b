"""``effreason eval`` end to end on a tiny untrained lab model: files, budgets, k samples, resume, compare."""

import json
import shutil

import pytest

from effreason.cli import main
from effreason.evaluation import report, store
from effreason.lab.model import build_lab_model
from effreason.lab.tokenizer import build_lab_tokenizer

FORCED = "</think> the answer is \\boxed{"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("lab_model")
    tok = build_lab_tokenizer()
    build_lab_model(tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def eval_args(model_dir, out, *extra):
    return ["eval", "--model", model_dir, "--benchmark", "lab", "--limit", "12", "--max-new-tokens", "16",
            "--batch-size", "4", "--no-progress", "--output", str(out), *extra]


def results_of(out):
    return json.loads((out / store.RESULTS_FILE).read_text())


def samples_of(out):
    rows, torn = store.read_samples(out / store.SAMPLES_FILE)
    assert not torn
    return {store.row_key(r): r for r in rows}


def outcome(results):
    """results.json without what describes one invocation (timing, output path)."""
    out = {k: v for k, v in results.items() if k not in report.TIMING_KEYS}
    out["config"] = {k: v for k, v in out["config"].items() if k != "output"}
    return out


def test_eval_writes_results_samples_and_summary(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(eval_args(model_dir, out)) == 0
    r = results_of(out)
    rows = samples_of(out)
    assert r["n"] == 12 and len(rows) == 12
    for key in ("accuracy", "tokens_mean", "tokens_median", "tokens_p90", "tokens_max", "thinking_tokens_mean",
                "answer_tokens_mean", "truncation_rate", "eff", "accuracy_per_1k_tokens", "config", "model",
                "backend", "versions", "wall_time_s", "throughput"):
        assert key in r, key
    assert r["backend"] == "hf" and r["versions"]["transformers"] and r["config"]["max_new_tokens"] == 16
    assert r["config"]["grading"] == "exact"  # resolved from the lab benchmark's spec
    tokens = [row["tokens"] for row in rows.values()]
    assert max(tokens) <= 16 and r["tokens_mean"] == pytest.approx(sum(tokens) / 12)
    assert all(row["thinking_tokens"] + row["answer_tokens"] == row["tokens"] for row in rows.values())
    assert r["accuracy"] == sum(row["correct"] for row in rows.values()) / 12
    assert (out / store.SUMMARY_FILE).read_text().startswith("# effreason eval: lab")
    assert "accuracy" in capsys.readouterr().out


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(model_dir, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(eval_args(model_dir, full)) == 0
    assert main(eval_args(model_dir, cut)) == 0
    # what a kill -9 leaves: one finished chunk, part of the next, a torn line, no results
    lines = (cut / store.SAMPLES_FILE).read_text().splitlines(keepends=True)
    (cut / store.SAMPLES_FILE).write_text("".join(lines[:6]) + lines[6][:25])
    (cut / store.RESULTS_FILE).unlink()
    assert main(eval_args(model_dir, cut)) == 0
    resumed = results_of(cut)
    assert resumed["resumed_rows"] == 4  # the one complete chunk of 4 problems
    assert outcome(resumed) == outcome(results_of(full))
    assert samples_of(cut) == samples_of(full)


def test_resume_refuses_a_changed_config(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(eval_args(model_dir, out, "--limit", "4")) == 0
    assert main(eval_args(model_dir, out, "--limit", "4", "--max-new-tokens", "8")) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens: 16 -> 8" in err and "--overwrite" in err
    assert main(eval_args(model_dir, out, "--limit", "4", "--max-new-tokens", "8", "--overwrite")) == 0
    assert results_of(out)["config"]["max_new_tokens"] == 8


def test_budget_forcing_rows(model_dir, tmp_path):
    out = tmp_path / "budgets"
    assert main(eval_args(model_dir, out, "--budgets", "4,8", "--budget-answer-tokens", "3")) == 0
    r, rows = results_of(out), samples_of(out)
    assert len(rows) == 12 * 3 and set(r["budgets"]) == {"4", "8"}
    for (pid, _, budget), row in rows.items():
        if budget is None:
            continue
        base = rows[(pid, 0, None)]
        if row["forced"]:
            assert FORCED in row["completion"]
            # budget thinking tokens + </think> + "the answer is \boxed{" (4) + at most 3 answer tokens
            assert budget + 5 <= row["tokens"] <= budget + 5 + 3
            assert row["thinking_tokens"] == budget + 1
            assert row["method_info"] == {"budget_forcing": {"forced_at": min(budget, base["tokens"])}}
        else:
            assert row["completion"] == base["completion"]
            assert row["method_info"] == {"budget_forcing": {"forced_at": None}}
    assert all("method_info" not in row for (_, _, budget), row in rows.items() if budget is None)
    assert any(row["forced"] for row in rows.values())  # the untrained model rarely closes its thinking
    assert r["budget_auc"] == pytest.approx((r["budgets"]["4"]["accuracy"] + r["budgets"]["8"]["accuracy"]) / 2)


def test_k_samples(model_dir, tmp_path):
    out = tmp_path / "k"
    assert main(eval_args(model_dir, out, "--limit", "4", "--temperature", "1.0", "-k", "3", "--seed", "1")) == 0
    r, rows = results_of(out), samples_of(out)
    assert len(rows) == 12 and r["n"] == 4 and r["samples_per_problem"] == 3
    assert {"accuracy_mean_at_k", "majority_accuracy", "pass_at_k"} <= set(r)
    completions = [rows[("lab/test/0", s, None)]["completion"] for s in range(3)]
    assert len(set(completions)) > 1  # sampled, not greedy


def test_user_jsonl_benchmark(model_dir, tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"q": f"start {i} ; s1 + 1 ; ( mod 11 )", "gold": (i + 1) % 11}) + "\n"
                            for i in range(3)))
    out = tmp_path / "user"
    argv = ["eval", "--model", model_dir, "--data", str(data), "--prompt-field", "q", "--answer-field", "gold",
            "--max-new-tokens", "8", "--no-progress", "--output", str(out)]
    assert main(argv) == 0
    rows = samples_of(out)
    assert [rows[(f"problems/{i}", 0, None)]["answer"] for i in range(3)] == ["1", "2", "3"]
    assert "start 2 ; s1 + 1" in rows[("problems/2", 0, None)]["prompt"]


def test_compare_table_and_plot(model_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(eval_args(model_dir, a, "--limit", "4")) == 0
    assert main(eval_args(model_dir, b, "--limit", "4", "--max-new-tokens", "8", "--budgets", "4")) == 0
    capsys.readouterr()
    png = tmp_path / "cmp.png"
    assert main(["eval", "compare", str(a), str(b), "--baseline", str(a), "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert "| a " in table and "| b " in table and "AES weights: a=1.0, b=3.0, c=5.0" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_input_errors_are_one_line(model_dir, tmp_path, capsys):
    assert main(["eval", "--model", model_dir, "--output", str(tmp_path)]) == 2
    assert "exactly one of --benchmark" in capsys.readouterr().err
    assert main(["eval", "--benchmark", "lab", "--output", str(tmp_path)]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(eval_args(model_dir, tmp_path / "x", "--budgets", "64")) == 2
    assert "exceeds --max-new-tokens" in capsys.readouterr().err
    assert main(eval_args(model_dir, tmp_path / "x", "-k", "2")) == 2
    assert "set --temperature" in capsys.readouterr().err


def test_missing_vllm_names_the_extra(model_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert main(eval_args(model_dir, tmp_path / "v", "--backend", "vllm")) == 2
    assert "pip install effreason[vllm]" in capsys.readouterr().err


def test_resume_notices_changed_weights(tmp_path, capsys):
    model = tmp_path / "m"
    tok = build_lab_tokenizer()
    build_lab_model(tok, seed=0).save_pretrained(model)
    tok.save_pretrained(model)
    out = tmp_path / "run"
    assert main(eval_args(str(model), out, "--limit", "2", "--max-new-tokens", "4")) == 0
    build_lab_model(tok, seed=1).save_pretrained(model)  # same path, new weights
    assert main(eval_args(str(model), out, "--limit", "2", "--max-new-tokens", "4")) == 2
    assert "model_files" in capsys.readouterr().err


# ---------------------------------------------------------------- output safety and resume checks

def _problems(path, shift=0):
    path.write_text("".join(json.dumps({"problem": f"start {i + shift} ; s1 + 1 ; ( mod 11 )",
                                        "answer": (i + shift + 1) % 11}) + "\n" for i in range(3)))


def test_resume_refuses_changed_problems_whatever_changed_them(model_dir, tmp_path, capsys):
    data, out = tmp_path / "problems.jsonl", tmp_path / "run"
    argv = ["eval", "--model", model_dir, "--max-new-tokens", "4", "--no-progress", "--output", str(out)]
    _problems(data)
    assert main([*argv, "--data", str(data)]) == 0
    first = (out / store.SAMPLES_FILE).read_bytes()
    _problems(data, shift=1)  # same path, same ids, other problems and golds
    assert main([*argv, "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert "prompt of problems/0: " in err and "the problems changed" in err and "--overwrite" in err
    assert (out / store.SAMPLES_FILE).read_bytes() == first
    # a benchmark's offline copy: --data-dir is not a setting, but what it holds is checked
    copies = {}
    for name, shift in (("d1", 0), ("d2", 0), ("d3", 5)):
        (tmp_path / name / "gsm8k").mkdir(parents=True)
        copies[name] = tmp_path / name / "gsm8k" / "test.jsonl"
        copies[name].write_text("".join(json.dumps({"question": f"start {i + shift} ; s1 + 1 ; ( mod 11 )",
                                                    "answer": f"so #### {(i + shift + 1) % 11}"}) + "\n"
                                        for i in range(3)))
    bench = ["eval", "--model", model_dir, "--benchmark", "gsm8k", "--max-new-tokens", "4", "--no-progress",
             "--output", str(tmp_path / "g")]
    assert main([*bench, "--data-dir", str(tmp_path / "d1")]) == 0
    assert main([*bench, "--data-dir", str(tmp_path / "d2")]) == 0  # the same content elsewhere: resumes
    assert results_of(tmp_path / "g")["resumed_rows"] == 3
    assert main([*bench, "--data-dir", str(tmp_path / "d3")]) == 2
    assert "prompt of gsm8k/test/0: " in capsys.readouterr().err


def test_a_running_eval_keeps_a_second_one_out_and_a_killed_ones_lock_is_taken_over(model_dir, tmp_path, capsys,
                                                                                     lock_holder, caplog):
    out = tmp_path / "run"
    out.mkdir()
    holder = lock_holder(out / store.LOCK_FILE)
    assert main(eval_args(model_dir, out, "--limit", "2")) == 2
    err = capsys.readouterr().err
    assert f"is being written by another run (pid {holder.pid} on " in err and len(err.strip().splitlines()) <= 2
    assert sorted(p.name for p in out.iterdir()) == [store.LOCK_FILE]  # nothing written
    holder.kill()
    holder.wait()
    assert main(eval_args(model_dir, out, "--limit", "2")) == 0
    assert "taking over the lock" in caplog.text and not (out / store.LOCK_FILE).exists()


def test_re_running_a_finished_eval_keeps_its_timing(model_dir, tmp_path):
    out = tmp_path / "run"
    assert main(eval_args(model_dir, out, "--limit", "4")) == 0
    first = results_of(out)
    assert first["throughput"]["problems"] == 4 and first["throughput"]["tokens_per_s"] > 0
    assert main(eval_args(model_dir, out, "--limit", "4")) == 0
    again = results_of(out)
    assert again["throughput"] == first["throughput"] and again["wall_time_s"] == first["wall_time_s"]
    assert again["resumed_rows"] == 4 and outcome(again) == outcome(first)


def test_a_model_that_fails_to_load_does_not_block_the_next_run(model_dir, tmp_path):
    model, out = tmp_path / "m", tmp_path / "run"
    shutil.copytree(model_dir, model)
    good = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(good[:1000])
    try:
        rc = main(eval_args(str(model), out, "--limit", "2"))
    except Exception as e:  # (the CLI's one-line message for it is another part of issue 12)
        rc = repr(e)
    assert rc != 0
    (model / "model.safetensors").write_bytes(good)  # fixed: the weights (hence their fingerprint) changed
    assert main(eval_args(str(model), out, "--limit", "2")) == 0
    assert results_of(out)["n"] == 2


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_files_eval_did_not_write_are_never_written_over(model_dir, tmp_path, capsys, overwrite):
    not_a_run = tmp_path / "model"
    shutil.copytree(model_dir, not_a_run)
    before = {p.name: p.read_bytes() for p in not_a_run.iterdir()}
    assert main(eval_args(model_dir, not_a_run, *overwrite)) == 2
    assert "config.json exists and was not written by `effreason eval`" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in not_a_run.iterdir()} == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "results.json").write_text("my results")
    assert main(eval_args(model_dir, notes, *overwrite)) == 2
    assert "results.json exists but has no config.json beside it" in capsys.readouterr().err
    assert [p.name for p in notes.iterdir()] == ["results.json"] and (notes / "results.json").read_text() == "my results"
    run = tmp_path / "run"
    assert main(eval_args(model_dir, run, "--limit", "2")) == 0
    samples = (run / store.SAMPLES_FILE).read_bytes()
    for source in (["--completions", str(run / store.SAMPLES_FILE)],
                   ["--model", model_dir, "--data", str(run / store.SAMPLES_FILE), "--prompt-field", "prompt"]):
        assert main(["eval", *source, "--output", str(run), *overwrite]) == 2
        assert "is also the output" in capsys.readouterr().err
    assert (run / store.SAMPLES_FILE).read_bytes() == samples


def test_outputs_have_the_users_permissions(model_dir, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        assert main(eval_args(model_dir, tmp_path / "run", "--limit", "2")) == 0
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()} == {
        name: 0o644 for name in (store.CONFIG_FILE, store.SAMPLES_FILE, store.RESULTS_FILE, store.SUMMARY_FILE)}


def test_compare_writes_over_its_own_table_and_plot_only(model_dir, tmp_path, capsys):
    run = tmp_path / "a"
    assert main(eval_args(model_dir, run, "--limit", "2")) == 0
    table, png = tmp_path / "t.md", tmp_path / "p.png"
    for _ in range(2):  # its own files: written again
        assert main(["eval", "compare", str(run), "--table", str(table), "--plot", str(png)]) == 0
    notes = tmp_path / "notes.md"
    notes.write_text("my notes")
    for flag, path in (("--table", notes), ("--plot", notes), ("--plot", run / store.RESULTS_FILE)):
        before = path.read_bytes()
        assert main(["eval", "compare", str(run), flag, str(path)]) == 2
        assert "was not written by `effreason eval compare`" in capsys.readouterr().err
        assert path.read_bytes() == before


def test_post_training_eval_loads_whole_weights_in_a_zero3_process(model_dir):
    """A recipe launched with launch/accelerate/zero3.yaml evaluates in the same process: the live ZeRO-3
    config must not make from_pretrained build an empty, partitioned model."""
    pytest.importorskip("deepspeed")
    from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

    from effreason.models import load_model_and_tokenizer, outside_zero3

    config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_batch_size": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        model, _ = load_model_and_tokenizer(model_dir, device="cpu")
        assert model.get_input_embeddings().weight.dim() == 2
        with outside_zero3():
            assert not is_deepspeed_zero3_enabled()
        assert is_deepspeed_zero3_enabled()  # the trainer's setting comes back
    finally:
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        del config
