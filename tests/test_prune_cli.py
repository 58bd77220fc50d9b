import json
import random
from pathlib import Path

import pytest

from effreason.cli import main
from effreason.grading import Grader
from effreason.jsonl import DataError, read_jsonl, write_jsonl
from effreason.lab.datasets import lab_problems
from effreason.lab.traces import VERBOSE, write_trace
from effreason.pruning.prune import load_traces


@pytest.fixture(scope="module")
def lab_traces(tmp_path_factory):
    rng = random.Random(0)
    rows = [{"id": f"t{i}", "problem": p.text(), "completion": write_trace(p, VERBOSE, rng).text,
             "answer": str(p.answer)} for i, p in enumerate(lab_problems("test")[:12])]
    path = tmp_path_factory.mktemp("traces") / "lab.jsonl"
    write_jsonl(path, rows)
    return path


def _prune(inp, out, *extra):
    assert main(["prune", "--input", str(inp), "--output", str(out), "--segmenter", "lab", "--no-progress",
                 *extra]) == 0
    return read_jsonl(out), json.loads(out.with_name(out.name + ".summary.json").read_text())


def test_pir_prune_of_lab_traces_keeps_answers_and_progressive_steps(lab_traces, tmp_path):
    rows, summary = _prune(lab_traces, tmp_path / "pir.jsonl", "--scorer", "lab", "--ratio", "0.5")
    assert summary["prune/traces"] == 12 and summary["prune/token_reduction"] > 0.1
    gold = {r["id"]: r["answer"] for r in read_jsonl(lab_traces)}
    with Grader("exact") as grader:
        assert all(grader.grade(r["pruned_completion"], gold[r["id"]]).correct for r in rows)
    for r in rows:
        assert not any(s["removed"] for s in r["steps"] if s["label"] == "progressive")
        functional = [s for s in r["steps"] if s["label"] != "progressive"]
        assert sum(s["removed"] for s in functional) == len(functional) // 2
        assert all(s["pir"] is not None for s in functional)


def test_resume_after_partial_run_gives_the_same_rows(lab_traces, tmp_path):
    full, _ = _prune(lab_traces, tmp_path / "full.jsonl", "--method", "random", "--tokenizer", "lab")
    out = tmp_path / "resumed.jsonl"
    _prune(lab_traces, out, "--method", "random", "--tokenizer", "lab", "--limit", "5")
    with out.open("a") as f:
        f.write('{"id": "t5", "compl')  # a torn last line, as left by a killed run
    rows, summary = _prune(lab_traces, out, "--method", "random", "--tokenizer", "lab")
    assert summary["resumed_traces"] == 5
    assert rows == full


def test_input_layouts_and_errors(tmp_path):
    path = tmp_path / "in.jsonl"
    think = "<think> a\n\nWait, check. </think> \\boxed{1}"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": think}]}) + "\n"
                    + json.dumps({"prompt": [{"role": "user", "content": "q2"}], "completion": think}) + "\n")
    traces = load_traces(path)
    assert [t["problem"] for t in traces] == ["q", "q2"] and traces[0]["id"] == "in.jsonl:1"
    path.write_text(json.dumps({"problem": "q"}) + "\n")
    with pytest.raises(DataError, match=r"in.jsonl:1: field 'completion'"):
        load_traces(path)
    path.write_text(json.dumps({"problem": "q", "completion": "<think> never closed"}) + "\n")
    with pytest.raises(DataError, match="truncated"):
        load_traces(path)
    out = str(tmp_path / "o.jsonl")
    assert main(["prune", "--input", str(path), "--output", out]) == 2  # pir without --scorer
    assert main(["prune", "--input", str(path), "--output", out, "--scorer", "lab", "--tokenizer", "lab"]) == 2


SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "r1_traces.jsonl"


def test_pir_prune_of_r1_samples_scores_gold_and_reuse_matches_full_passes(tmp_path):
    """The hand-written R1-style traces ("Wait", "Alternatively", "Let me double-check" steps), scored
    by the lab model (their words are mostly unknown to it: this checks the plumbing, not the scores)."""
    base = ["--input", str(SAMPLES), "--scorer", "lab", "--ratio", "0.5", "--no-progress"]
    out, full = tmp_path / "r1.jsonl", tmp_path / "r1_full.jsonl"
    assert main(["prune", "--output", str(out), *base]) == 0
    assert main(["prune", "--output", str(full), "--no-prefix-reuse", *base]) == 0
    rows, summary = read_jsonl(out), json.loads((tmp_path / "r1.jsonl.summary.json").read_text())
    scored = [r for r in rows if any(s["label"] != "progressive" for s in r["steps"])]
    assert summary["prune/pir_target_gold"] == len(scored) == 5  # every sample has a gold `answer`
    assert summary["prune/steps_removed"] == sum(len([s for s in r["steps"] if s["label"] != "progressive"]) // 2
                                                 for r in rows) > 0
    for a, b in zip(rows, read_jsonl(full), strict=True):
        assert [s["removed"] for s in a["steps"]] == [s["removed"] for s in b["steps"]]
        for sa, sb in zip(a["steps"], b["steps"], strict=True):
            assert (sa["pir"] is None) == (sb["pir"] is None)
            assert sa["pir"] is None or abs(sa["pir"] - sb["pir"]) < 1e-4


def test_gold_that_cannot_be_placed_is_reported_with_its_line(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"problem": "q", "completion": "<think> a\n\nWait, b. </think> \\boxed{1}",
                                "answer": "1"}) + "\n"
                    + json.dumps({"problem": "q", "completion": "<think> a\n\nWait, b. </think> It is 1.",
                                  "answer": "2"}) + "\n")
    assert main(["prune", "--input", str(path), "--output", str(tmp_path / "o.jsonl"), "--scorer", "lab"]) == 2
    assert "in.jsonl:2: field 'answer'" in capsys.readouterr().err
    # random pruning scores nothing, so the same file is fine for it
    assert main(["prune", "--input", str(path), "--output", str(tmp_path / "r.jsonl"), "--method", "random",
                 "--tokenizer", "lab", "--no-progress"]) == 0
