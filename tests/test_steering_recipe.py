"""recipes/steering.py end to end on a tiny random Qwen2 with an R1-style BPE tokenizer (issue 15).

The shipped real-model config runs with the hub model swapped for the tiny one, pairs from a JSONL
file (ASC's source) and GSM8K / MATH copies in a temporary data folder; everything else is the recipe
as users run it. (A random model never answers right: the sweep still runs, and the recipe says that
no layer lowered the tokens.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_recipe

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "qwen1.5b" / "steering.yaml"
PAIRS = [
    {"problem": "What is 2 + 3?", "concise": "<think>\n2 + 3 = 5.\n</think>\n\nThe answer is $\\boxed{5}$.",
     "verbose": "<think>\n2 + 3 = 5. Wait, let me check: 3 + 2 = 5. Hmm, yes.\n</think>\n\nThe answer is $\\boxed{5}$."},
    {"problem": "What is 4 * 6?", "concise": "<think>\n4 * 6 = 24.\n</think>\n\n$\\boxed{24}$",
     "verbose": "<think>\n4 * 6 = 24. Alternatively, 6 * 4 = 24. Wait, 24.\n</think>\n\n$\\boxed{24}$"},
]


def _recipe():
    return load_recipe("steering")


@pytest.fixture(scope="module")
def tiny(tiny_bpe_model):
    return tiny_bpe_model


@pytest.fixture
def data_dir(tmp_path, benchmarks_dir):
    folder = tmp_path / "benchmarks"
    (folder / "math").mkdir(parents=True)
    (folder / "gsm8k").symlink_to(Path(benchmarks_dir) / "gsm8k")
    (folder / "math500").symlink_to(Path(benchmarks_dir) / "math500")
    rows = [{"problem": f"What is {i} + {i}?", "solution": f"Add: $\\boxed{{{2 * i}}}$.", "level": "Level 1",
             "type": "Algebra"} for i in range(1, 5)]
    (folder / "math" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def argv(tiny, out, data_dir, *more):
    return ["--config", str(CONFIG), "--model_name_or_path", str(tiny), "--output_dir", str(out), "--dtype", "float32",
            "--backend", "hf", "--layers", "1", "2", "--kl_problems", "2", "--sweep_problems", "2",
            "--dev_max_new_tokens", "12", "--eval_limit", "2", "--eval_backend", "hf", "--eval_max_new_tokens", "12",
            "--eval_gammas", "0.5", "--transfer_benchmark", "none", "--data_dir", str(data_dir), *more]


JSONL = ("--pairs", "jsonl", "--require_effect", "false")  # a random model: no strength shortens it reliably


def test_real_model_config_parses_for_its_depth():
    from effreason.hidden import resolve_layers
    from effreason.steering.args import parse_steering_args

    args, eval_args = parse_steering_args(["--config", str(CONFIG)])
    assert args.model_name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert (args.pairs, args.pair_benchmark, args.pair_split, args.backend) == ("self", "math", "train", "vllm")
    assert resolve_layers(args.layers, 28) == [9, 14, 19, 21] and args.eps == 1e-3
    assert eval_args.eval_benchmark == "math500" and eval_args.eval_backend == "vllm"


def test_whole_recipe_on_a_tiny_bpe_model(tiny, tmp_path, data_dir):
    from effreason.models import load_tokenizer
    from effreason.steering.vector import SteeringVector

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    recipe = _recipe()
    out = tmp_path / "run"
    assert recipe.main(argv(tiny, out, data_dir, *JSONL, "--pairs_file", str(pairs))) == 0
    vec = SteeringVector.load(out / "steering")
    assert vec.layer in (1, 2) and vec.sign in (1, -1) and vec.hidden_size == 128
    vec.check_model(str(tiny), load_tokenizer(str(tiny)), depth=2, hidden_size=128)
    sweep = vec.info["sweep"]["candidates"]
    assert {(c["layer"], c["sign"]) for c in sweep} == {(1, 1), (1, -1), (2, 1), (2, -1)}
    for c in sweep:  # every candidate's strength is within the bound as measured
        assert c["kl"] is None or c["kl"]["p95"] <= 1e-3 + 1e-12
        assert c["closed_form"]["gamma"] >= 0 and c["closed_form"]["a"] > 0
    assert vec.info["pairs"] == {"source": "jsonl", "file": str(pairs), "pairs": 2}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["eval"]) == {"unsteered", f"gamma_{vec.gamma:.6g} (chosen)", "gamma_0.5"}
    assert (out / "comparison.md").is_file() and (out / "comparison.png").is_file()

    # a second run reuses the vector; another setting is refused with what changed
    before = (out / "steering" / "steering.json").stat().st_mtime_ns
    assert recipe.main(argv(tiny, out, data_dir, *JSONL, "--pairs_file", str(pairs))) == 0
    assert (out / "steering" / "steering.json").stat().st_mtime_ns == before
    from effreason.outputs import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="eps"):
        recipe.main(argv(tiny, out, data_dir, *JSONL, "--pairs_file", str(pairs), "--eps", "0.01"))


def test_no_effect_is_an_error_with_the_sweep_kept(tiny, tmp_path, data_dir):
    from effreason.errors import UserError

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    out = tmp_path / "run"
    with pytest.raises(UserError, match="no layer and sign lowered the dev tokens.*sweep.json"):
        _recipe().main(argv(tiny, out, data_dir, "--pairs", "jsonl", "--pairs_file", str(pairs), "--eps", "1e-6"))
    sweep = json.loads((out / "sweep.json").read_text())
    assert len(sweep["candidates"]) == 4 and not (out / "steering").exists()


def test_self_pairs_from_math_train_say_when_none_are_correct(tiny, tmp_path, data_dir):
    from effreason.errors import UserError

    with pytest.raises(UserError, match="pairs=self: no pairs"):
        _recipe().main(argv(tiny, tmp_path / "run", data_dir, "--pair_problems", "3", "--pair_samples", "2",
                            "--pair_max_new_tokens", "8"))


def test_config_mistakes_are_one_line_errors(tmp_path):
    from effreason.errors import UserError

    recipe = _recipe()
    with pytest.raises(UserError, match="pairs=jsonl needs pairs_file"):
        recipe.main(["--output_dir", str(tmp_path / "a"), "--pairs", "jsonl"])
    with pytest.raises(UserError, match="pairs=lab are lab traces"):
        recipe.main(["--output_dir", str(tmp_path / "a"), "--model_name_or_path", str(tmp_path)])
    with pytest.raises(UserError, match="gamma_rule must be one of"):
        recipe.main(["--output_dir", str(tmp_path / "a"), "--gamma_rule", "guess"])
