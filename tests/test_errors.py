"""Errors for people: a user's mistake ends in at most two lines naming the thing, exit code 2; ``--debug`` /
``EFFREASON_DEBUG=1`` show the traceback; a bug keeps its traceback (``effreason.errors``)."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from effreason.cli import main
from effreason.errors import UserError, describe, is_user_error, report_user_error
from effreason.jsonl import DataError, read_jsonl
from effreason.models import LAB_MODEL_DIR, check_model_source
from effreason.outputs import check_output_path

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, *, env=None, script=None):
    """Run the effreason CLI (or a recipe script) in a fresh process; ``(returncode, stderr lines)``."""
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "effreason.cli"]
    full_env = {k: v for k, v in os.environ.items() if k != "EFFREASON_DEBUG"}
    full_env.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})})
    p = subprocess.run([*command, *map(str, args)], env=full_env, cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    return p.returncode, [line for line in p.stderr.splitlines() if line.strip()]


def assert_short(rc, lines, *names):
    assert rc == 2, lines
    assert 1 <= len(lines) <= 2 and not any("Traceback" in line for line in lines), lines
    for name in names:
        assert name in "\n".join(lines), (name, lines)


@pytest.fixture
def bad(tmp_path):
    """Inputs a careless user gives: an empty folder, a corrupt checkpoint, non-UTF-8 JSONL, a file as a folder."""
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(LAB_MODEL_DIR, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "latin1.jsonl").write_bytes(b'{"problem": "1+1", "answer": "2"}\n{"problem": "caf\xe9", "answer": "3"}\n')
    (tmp_path / "afile").write_text("x")
    return tmp_path


# ---- the command line, in a fresh process: exit code, stderr, --debug


def test_empty_model_folder_names_it_and_debug_shows_the_traceback(bad):
    args = ["eval", "--model", bad / "empty", "--benchmark", "lab", "--output", bad / "out"]
    rc, lines = run_cli(args)
    assert_short(rc, lines, str(bad / "empty"), "empty folder")
    assert "sentencepiece" not in "\n".join(lines)
    assert not (bad / "out").exists()  # refused before anything was written
    rc, lines = run_cli([*args, "--debug"])
    assert rc != 0 and any(line.startswith("Traceback") for line in lines)
    rc, lines = run_cli(args, env={"EFFREASON_DEBUG": "1"})
    assert rc != 0 and any(line.startswith("Traceback") for line in lines)


def test_hub_id_offline_is_named(bad):
    rc, lines = run_cli(["eval", "--model", "someorg/no-such-model", "--benchmark", "lab", "--output", bad / "o"],
                        env={"HF_HUB_CACHE": str(bad / "cache")})
    assert_short(rc, lines, "'someorg/no-such-model'", "HF_HUB_OFFLINE")


def test_undecodable_input_names_file_and_line(bad):
    rc, lines = run_cli(["eval", "--model", "lab", "--data", bad / "latin1.jsonl", "--output", bad / "o"])
    assert_short(rc, lines, f"{bad / 'latin1.jsonl'}:2", "UTF-8")


def test_bad_flag_value_is_two_lines_not_the_usage():
    rc, lines = run_cli(["eval", "--model", "lab", "--benchmark", "lab", "--budgets", "a,b", "--output", "x"])
    assert_short(rc, lines, "--budgets", "'a,b'")


def test_recipe_config_value_of_the_wrong_type_names_file_and_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model_name_or_path: lab\noutput_dir: out\nlearning_rate: fast\n")
    rc, lines = run_cli(["--config", config], script=REPO / "recipes" / "lgrpo.py")
    assert_short(rc, lines, str(config), "learning_rate", "a number", "'fast'")
    rc, lines = run_cli(["--config", config, "--debug"], script=REPO / "recipes" / "lgrpo.py")
    assert rc != 0 and any(line.startswith("Traceback") for line in lines)


# ---- the same handler in-process (faster): one or two lines naming the thing, exit code 2


@pytest.mark.parametrize("case", ["corrupt model", "output under a file", "output is a file", "data is a folder",
                                  "missing baseline", "missing tokenizer", "prune output is a folder",
                                  "plot under a file", "lab show --n 0", "bootstrap out under a file", "bad device",
                                  "bad dtype"])
def test_user_mistakes_in_process(case, bad, capsys):
    out = bad / "out"
    argv, names = {
        "corrupt model": (["eval", "--model", bad / "corrupt", "--benchmark", "lab", "--output", out],
                          [str(bad / "corrupt"), "model.safetensors", "corrupt"]),
        "output under a file": (["eval", "--model", "lab", "--benchmark", "lab", "--output", bad / "afile" / "o"],
                                [str(bad / "afile"), "is a file"]),
        "output is a file": (["eval", "--model", "lab", "--benchmark", "lab", "--output", bad / "afile"],
                             [str(bad / "afile"), "is a file"]),
        "data is a folder": (["eval", "--model", "lab", "--data", bad / "empty", "--output", out],
                             [str(bad / "empty"), "is a folder"]),
        "missing baseline": (["eval", "--model", "lab", "--benchmark", "lab", "--baseline", bad / "nope",
                              "--output", out], [str(bad / "nope"), "results.json"]),
        "missing tokenizer": (["eval", "--completions", bad / "latin1.jsonl", "--tokenizer", bad / "tok",
                               "--output", out], ["--tokenizer", str(bad / "tok"), "no such folder"]),
        "prune output is a folder": (["prune", "--input", bad / "latin1.jsonl", "--output", bad / "empty",
                                      "--method", "random", "--tokenizer", "lab"], [str(bad / "empty"), "folder"]),
        "plot under a file": (["eval", "compare", bad, "--plot", bad / "afile" / "p.png"],
                              ["--plot", str(bad / "afile"), "is a file"]),
        "lab show --n 0": (["lab", "show", "--n", "0"], ["--n"]),
        "bootstrap out under a file": (["lab", "bootstrap", "--out", bad / "afile" / "ck"],
                                       [str(bad / "afile"), "is a file"]),
        "bad device": (["eval", "--model", "lab", "--benchmark", "lab", "--device", "gpu7", "--output", out],
                       ["--device 'gpu7'"]),
        "bad dtype": (["eval", "--model", "lab", "--benchmark", "lab", "--dtype", "float33", "--output", out],
                      ["--dtype 'float33'"]),
    }[case]
    assert main([str(a) for a in argv]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert_short(2, lines, *names)
    assert not out.exists()


def test_a_bug_keeps_its_traceback(monkeypatch):
    import effreason.lab.cli as lab_cli

    def broken(args):
        raise TypeError("a bug")

    monkeypatch.setattr(lab_cli, "_run_show", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["lab", "show"])
    assert not is_user_error(KeyError("x")) and is_user_error(PermissionError(13, "Permission denied", "/x"))


def test_messages_are_at_most_two_lines_and_name_the_path(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    message = describe(NotADirectoryError(errno.ENOTDIR, "Not a directory", str(blocker / "a" / "b")))
    assert f"{blocker} is a file" in message
    assert "permission denied" in describe(PermissionError(errno.EACCES, "Permission denied", "/x/y"))
    assert describe(OSError("one\ntwo\nthree\nfour")).splitlines() == ["one", "two three four"]
    assert report_user_error(ValueError("bad"), "prog") and capsys.readouterr().err == "prog: error: bad\n"
    assert not report_user_error(ValueError("bad"), "prog", debug=True)


# ---- the checks themselves


def test_check_model_source(tmp_path, monkeypatch):
    assert check_model_source("lab") == str(LAB_MODEL_DIR)
    model = tmp_path / "m"
    shutil.copytree(LAB_MODEL_DIR, model)
    check_model_source(model)
    cases = [("no config", lambda: (model / "config.json").unlink(), "no config.json"),
             ("no weights", lambda: (model / "model.safetensors").unlink(), "no weights"),
             ("no tokenizer", lambda: [(model / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")],
              "no tokenizer files")]
    for _, damage, message in cases:
        shutil.rmtree(model)
        shutil.copytree(LAB_MODEL_DIR, model)
        damage()
        with pytest.raises(UserError, match=message):
            check_model_source(model, "--model")
    shutil.rmtree(model)
    shutil.copytree(LAB_MODEL_DIR, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # a download cut short
    with pytest.raises(UserError, match=r"model.safetensors is truncated or corrupt"):
        check_model_source(model)
    (model / "model.safetensors").unlink()
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-1.safetensors"}}))
    with pytest.raises(UserError, match="model-1.safetensors listed in model.safetensors.index.json is missing"):
        check_model_source(model)
    with pytest.raises(UserError, match="no such folder"):
        check_model_source(tmp_path / "nope", "model_name_or_path")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"'org/name' is not a local folder.*not in the Hugging Face cache"):
        check_model_source("org/name")  # HF_HUB_OFFLINE=1 in the tests (conftest)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="no adapter weights"):
        check_model_source(adapter, "--adapter", adapter=True)


def test_check_output_path(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    assert check_output_path(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    with pytest.raises(UserError, match=f"{tmp_path / 'f'} is a file, not a folder"):
        check_output_path(tmp_path / "f" / "out.jsonl", folder=False)
    with pytest.raises(UserError, match="is a folder; give a file path"):
        check_output_path(tmp_path, "--output", folder=False)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(readonly) else real_access(p, mode))
    with pytest.raises(UserError, match=f"cannot write in {readonly}"):
        check_output_path(readonly / "out", "output_dir")


def test_jsonl_read_errors_name_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n' * 3 + b'{"a": "\xff"}\n')
    with pytest.raises(DataError, match=rf"{path}:4: not UTF-8 text \(byte 0xff"):
        read_jsonl(path)
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError, match=rf"{path}:2: invalid JSON \(Expecting value at column 7\)"):
        read_jsonl(path)
    with pytest.raises(DataError, match="is a folder"):
        read_jsonl(tmp_path)


def test_recipe_config_types(tmp_path):
    from effreason.training.args import LGRPOArguments, parse_recipe_args

    config = tmp_path / "c.yaml"
    for text, message in [("learning_rate: [1]\n", "learning_rate: expected a number, got \\[1\\]"),
                          ("max_steps: 2.5\n", "max_steps: expected an integer"),
                          ("bf16: maybe\n", "bf16: expected true or false"),
                          ("lr_scheduler_type: cosin\n", "lr_scheduler_type: expected one of linear, cosine"),
                          ("stage1: {max_steps: ten}\n", "stage1: max_steps: expected an integer, got 'ten'"),
                          ("eval_benchmark: gsm8kk\n", "eval_benchmark: unknown benchmark 'gsm8kk'"),
                          ("eval_max_new_tokens: 0\n", "eval_max_new_tokens must be >= 1"),
                          ("learning_rate: [1\n", ":4: not valid YAML.*flow sequence from line 3")]:
        config.write_text("model_name_or_path: lab\noutput_dir: out\n" + text)
        with pytest.raises(UserError, match=f"{config}.*{message}"):
            parse_recipe_args(LGRPOArguments, ["--config", str(config)])
    config.write_text("model_name_or_path: lab\noutput_dir: out\nuse_cpu: true\nlearning_rate: 3e-4\nmax_steps: 4.0\n")
    _, _, grpo, _ = parse_recipe_args(LGRPOArguments, ["--config", str(config)])  # YAML's 3e-4 is a string
    assert grpo.learning_rate == 3e-4
    with pytest.raises(UserError, match=r"^the command line: argument --max_steps.*invalid int value: 'x'"):
        parse_recipe_args(LGRPOArguments, ["--config", str(config), "--max_steps", "x"])


def test_reward_parameter_errors_name_the_parameter():
    from effreason.rewards import build_rewards

    context = {"num_generations": 4, "max_completion_tokens": 64}
    for spec, message in [({"name": "lgrpo", "alpha": "x"}, "parameter 'alpha' must be a finite number, got 'x'"),
                          ({"name": "lgrpo", "alpha": -4}, "alpha .* must be >= 0, got -4"),
                          ({"name": "correctness", "mode": 3}, "parameter 'mode' must be a string"),
                          ({"name": "dapo_overlong", "cache_tokens": "8"}, "parameter 'cache_tokens' must be an integer"),
                          ({"name": "tldr", "budgets": {"a": 8}, "lambdas": {"a": "x"}}, "lambda of level 'a'")]:
        with pytest.raises(ValueError, match=rf"rewards\[0\].*{message}"):
            build_rewards([spec], context=context)
    funcs, _ = build_rewards([{"name": "lgrpo", "alpha": "5e-1"}], context=context)  # YAML reads 5e-1 as text
    assert funcs[0].alpha == 0.5
