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


# ---------------------------------------------------------------- Hugging Face datasets in and out

def _limo_like_rows(n: int) -> list[dict]:
    """Rows named as public sets name them (``question``, ``answer``, chat ``messages``)."""
    rows = []
    for i in range(n):
        think = f"<think> {i} plus one is {i + 1}.\n\nWait, let me double-check: {i + 1}. </think> \\boxed{{{i + 1}}}"
        rows.append({"uid": f"u{i}", "question": f"What is {i} + 1?", "answer": str(i + 1),
                     "messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                  {"role": "assistant", "content": think}]})
    return rows


def test_traces_from_a_saved_dataset_a_parquet_file_and_a_dataset_object(tmp_path):
    from datasets import Dataset, DatasetDict

    data = Dataset.from_list(_limo_like_rows(4))
    saved = tmp_path / "saved"
    DatasetDict({"train": data, "test": data.select([0])}).save_to_disk(str(saved))
    data.to_parquet(str(tmp_path / "t.parquet"))
    columns = ["id=uid", "problem=question"]
    from_dir = load_traces(saved, columns=columns, check_answers=True)
    assert [t["id"] for t in from_dir] == ["u0", "u1", "u2", "u3"]
    assert from_dir[2]["problem"] == "What is 2 + 1?" and from_dir[2]["answer"] == "3"
    assert "double-check" in from_dir[2]["completion"]
    assert load_traces(tmp_path / "t.parquet", columns=columns) == from_dir
    assert load_traces(data, columns=columns) == from_dir
    assert [t["id"] for t in load_traces(saved, split="test", columns=columns)] == ["u0"]
    assert len(load_traces(saved, columns=columns, limit=2)) == 2
    # the problem falls back to the last user message when no column is mapped
    assert load_traces(saved)[0]["problem"] == "What is 0 + 1?"


def test_dataset_errors_name_the_source_row_and_column(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = _limo_like_rows(3)
    rows[1]["messages"][1]["content"] = "<think> cut off mid-thought"
    saved = tmp_path / "ds"
    Dataset.from_list(rows).save_to_disk(str(saved))
    with pytest.raises(DataError, match=rf"{saved}:2: field 'messages': no closed </think>"):
        load_traces(saved)
    skipped = []
    assert [t["id"] for t in load_traces(saved, columns=["id=uid"], skipped=skipped)] == ["u0", "u2"]
    assert len(skipped) == 1 and ":2:" in skipped[0]
    with pytest.raises(DataError, match=r"ds:1: field 'question_text': column 'question_text' \(mapped to "
                                        r"'problem'\) is missing \(columns present: answer, messages"):
        load_traces(saved, columns=["problem=question_text"])
    with pytest.raises(ValueError, match="is not FIELD=COLUMN"):
        load_traces(saved, columns=["problem"])
    with pytest.raises(ValueError, match="names the field 'question'"):
        load_traces(saved, columns=["question=problem"])
    with pytest.raises(ValueError, match="has no split 'validation'; splits: train"):
        load_traces(DatasetDict({"train": Dataset.from_list(rows)}), split="validation")
    with pytest.raises(DataError, match="file not found"):
        load_traces(tmp_path / "nope.parquet")
    with pytest.raises(ValueError, match="could not load the Hub dataset 'no-such-org/no-such-traces'"):
        load_traces("no-such-org/no-such-traces")  # offline in the tests (HF_HUB_OFFLINE=1)
    dup = tmp_path / "dup.jsonl"
    write_jsonl(dup, [{"id": "a", "problem": "q", "completion": "<think> x </think> 1"}] * 2)
    with pytest.raises(DataError, match=r"dup.jsonl:2: field 'id': id 'a' repeats the row at 1"):
        load_traces(dup)


def test_prune_cli_reads_a_dataset_and_saves_one_for_sft(tmp_path, capsys):
    from datasets import Dataset, load_from_disk

    rows = _limo_like_rows(5)
    rows[3]["messages"][1]["content"] = "<think> cut off"
    saved = tmp_path / "ds"
    Dataset.from_list(rows).save_to_disk(str(saved))
    out, ds_dir = tmp_path / "o.jsonl", tmp_path / "pruned_ds"
    args = ["prune", "--input", str(saved), "--columns", "id=uid", "problem=question", "--output", str(out),
            "--method", "random", "--tokenizer", "lab", "--ratio", "1", "--no-progress", "--save-dataset", str(ds_dir)]
    assert main(args) == 2 and f"{saved}:4: field 'messages'" in capsys.readouterr().err  # the cut-off row
    assert not out.exists() and not ds_dir.exists()  # nothing written before the input is checked
    assert main([*args, "--skip-bad-rows"]) == 0
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["skipped_rows"] == 1 and summary["prune/traces"] == 4
    jsonl = read_jsonl(out)
    pruned = load_from_disk(str(ds_dir))
    assert pruned["id"] == [r["id"] for r in jsonl] == ["u0", "u1", "u2", "u4"]
    assert pruned["pruned_completion"] == [r["pruned_completion"] for r in jsonl]
    assert all("double-check" not in r["pruned_completion"] for r in jsonl)  # ratio 1: every check removed
    first = pruned[0]["messages"]
    assert first == [{"role": "user", "content": "What is 0 + 1?"},
                     {"role": "assistant", "content": jsonl[0]["pruned_completion"]}]
    assert [s["label"] for s in pruned[0]["steps"]] == [s["label"] for s in jsonl[0]["steps"]]


def test_prune_cli_marker_file_and_segmenter_settings(tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    think = "<think> 2 + 2 = 4. Four it is.\n\nHold on, 2 + 2 is 4 indeed.\n\nSo 4. </think> \\boxed{4}"
    write_jsonl(path, [{"id": "a", "problem": "2 + 2?", "completion": think, "answer": "4"}])
    markers = tmp_path / "m.yaml"
    markers.write_text("extend: true\nverification: [hold on]\n")
    base = ["prune", "--input", str(path), "--method", "random", "--tokenizer", "lab", "--ratio", "1", "--no-progress"]
    plain, _ = _prune_rows(base, tmp_path / "plain.jsonl")
    assert not any(s["removed"] for s in plain[0]["steps"])  # "Hold on" is no default marker
    marked, _ = _prune_rows([*base, "--markers", str(markers)], tmp_path / "marked.jsonl")
    assert [s["removed"] for s in marked[0]["steps"]] == [False, True, False]
    assert "Hold on" not in marked[0]["pruned_completion"] and "2 + 2 = 4." in marked[0]["pruned_completion"]
    # one step per sentence with a 1-character paragraph limit: the two-sentence paragraph becomes two
    split, _ = _prune_rows([*base, "--max-paragraph-chars", "1", "--sentences-per-step", "1"], tmp_path / "s.jsonl")
    assert len(split[0]["steps"]) == 4
    markers.write_text("verifcation: [hold on]\n")
    assert main([*base, "--markers", str(markers), "--output", str(tmp_path / "bad.jsonl")]) == 2
    assert "did you mean 'verification'" in capsys.readouterr().err and not (tmp_path / "bad.jsonl").exists()


def _prune_rows(args, out):
    assert main([*args, "--output", str(out)]) == 0
    return read_jsonl(out), json.loads(out.with_name(out.name + ".summary.json").read_text())
