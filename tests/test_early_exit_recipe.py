"""recipes/early_exit.py end to end on a tiny random Qwen2 with an R1-style BPE tokenizer (issue 14).

The shipped real-model config runs with the hub model swapped for the tiny one and R1-style traces
(``data/samples/r1_traces.jsonl`` plus a trace with "await" and "waiting"). A random model never
answers right, so the labels are overridden after the real labelling step (alternating per event);
everything else is the recipe as users run it: cues on word boundaries, features, probe, calibration,
artifact, bound check, the eval with and without exit, resume, and a killed run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import load_recipe

from effreason.early_exit import data

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "qwen1.5b" / "early_exit.yaml"
EXTRA = {"id": "await-trace", "problem": "What is 2 + 3?", "answer": "5",
         "completion": "<think>\nI await the sum. Waiting is not needed: 2 + 3 = 5.\nWait, check: 2 + 3 = 5. "
                       "Hmm, yes.\n</think>\n\nWait no more. The answer is $\\boxed{5}$."}


def _recipe():
    return load_recipe("early_exit")


@pytest.fixture(scope="module")
def tiny(tiny_bpe_model):
    return tiny_bpe_model


@pytest.fixture
def traces(tmp_path):
    rows = [json.loads(line) for line in (ROOT / "data" / "samples" / "r1_traces.jsonl").read_text().splitlines()]
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, EXTRA]))
    return path


@pytest.fixture
def forced_labels(monkeypatch):
    real = data.label_events

    def label(*args, **kwargs):
        real(*args, **kwargs)
        for i, e in enumerate(args[3]):
            e["label"] = i % 2  # a random model never answers right: both classes, for the mechanics
    monkeypatch.setattr(data, "label_events", label)


def argv(tiny, traces, out, *more, data_dir):
    return ["--config", str(CONFIG), "--model_name_or_path", str(tiny), "--output_dir", str(out),
            "--rollouts_file", str(traces), "--dtype", "float32", "--backend", "hf", "--layers", "1", "2",
            "--answer_tokens", "4", "--bound_splits", "3", "--eval_benchmark", "gsm8k", "--eval_limit", "2",
            "--eval_backend", "hf", "--eval_max_new_tokens", "24", "--transfer_benchmark", "none",
            "--data_dir", str(data_dir), *more]


def test_real_model_config_parses_for_its_depth():
    from effreason.early_exit.args import parse_early_exit_args
    from effreason.hidden import resolve_layers

    args, eval_args = parse_early_exit_args(["--config", str(CONFIG)])
    assert args.model_name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" and args.backend == "vllm"
    assert resolve_layers(args.layers, 28) == [9, 16, 28]
    assert eval_args.eval_benchmark == "gsm8k" and args.eval_deltas == [0.05, 0.1]
    assert resolve_layers(["1/3", "2/3", "last"], 28) == [9, 19, 28]


def test_whole_recipe_on_a_tiny_bpe_model(tiny, traces, tmp_path, forced_labels, benchmarks_dir):
    from effreason.early_exit.probe import ExitProbe
    from effreason.models import load_tokenizer

    recipe = _recipe()
    out = tmp_path / "run"
    assert recipe.main(argv(tiny, traces, out, data_dir=benchmarks_dir)) == 0
    events = data.read_events(out / data.EVENTS_FILE)
    rows = data.read_rollouts(out / data.ROLLOUTS_FILE)
    tok = load_tokenizer(str(tiny))
    # every event is a whole-word cue in the thinking; "await", "waiting" and the cue after </think> are not
    expected = 0
    for r in rows:
        thinking = r["completion"].split("</think>")[0]
        expected += len(re.findall(r"(?<!\w)(wait|hmm|alternatively)(?!\w)", thinking, flags=re.IGNORECASE))
    assert len(events) == expected > 0
    for e in events:
        r = rows[e["trace"]]
        assert r["completion_ids"] == tok(r["completion"], add_special_tokens=False)["input_ids"]
        assert tok.decode(r["completion_ids"][e["token"]:]).lstrip()[: len(e["cue"])].lower() == e["cue"].lower()
    assert not any(e["trace_id"] == "await-trace/0" and e["cue"].lower() == "await" for e in events)
    assert sum(e["trace_id"] == "await-trace/0" for e in events) == 2  # "Wait," and "Hmm," only
    probe = ExitProbe.load(out / "probe")
    assert probe.layers == [1, 2] and probe.exit_string.startswith("</think>")
    probe.check_model(str(tiny), tok, 2, probe.model["hidden_size"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["eval"]) == {"no_exit", "exit_d0.05", "exit_d0.1"}
    assert (out / "comparison.md").is_file() and len(json.loads((out / "bound.json").read_text())) == 5

    # a second run reuses every stage; another setting is refused with what changed
    before = (out / data.EVENTS_FILE).stat().st_mtime_ns
    assert recipe.main(argv(tiny, traces, out, data_dir=benchmarks_dir)) == 0
    assert (out / data.EVENTS_FILE).stat().st_mtime_ns == before
    from effreason.outputs import ConfigMismatchError

    with pytest.raises(ConfigMismatchError, match="answer_tokens"):
        recipe.main(argv(tiny, traces, out, "--answer_tokens", "5", data_dir=benchmarks_dir))
    # rollouts made again (here: one fewer) are never labelled with the old events
    lines = (out / data.ROLLOUTS_FILE).read_text().splitlines(keepends=True)
    (out / data.ROLLOUTS_FILE).write_text("".join(lines[:-1]))
    from effreason.errors import UserError

    with pytest.raises(UserError, match="events.jsonl was made from other rollouts.jsonl"):
        recipe.main(argv(tiny, traces, out, data_dir=benchmarks_dir))


def test_a_killed_run_leaves_no_half_probe_and_resumes(tiny, traces, tmp_path, forced_labels, monkeypatch,
                                                         benchmarks_dir):
    from effreason.early_exit import probe as probe_module

    recipe = _recipe()
    out = tmp_path / "run"
    real = probe_module.ExitProbe.save

    def killed(self, folder):
        real(self, folder)
        (Path(folder) / "probe.json").write_text("{half")  # the write was cut short...
        raise KeyboardInterrupt  # ...by a kill

    monkeypatch.setattr(probe_module.ExitProbe, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        recipe.main(argv(tiny, traces, out, "--eval_benchmark", "none", data_dir=benchmarks_dir))
    assert not (out / "probe").exists()  # the temporary folder went with the failure
    assert (out / data.FEATURES_FILE).is_file()  # finished stages stay
    monkeypatch.setattr(probe_module.ExitProbe, "save", real)
    assert recipe.main(argv(tiny, traces, out, "--eval_benchmark", "none", data_dir=benchmarks_dir)) == 0
    probe_module.ExitProbe.load(out / "probe")
