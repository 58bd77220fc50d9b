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


# ---------------------------------------------------------------- output safety, resume checks, bad inputs

RANDOM = ["--method", "random", "--tokenizer", "lab", "--segmenter", "lab", "--no-progress"]


@pytest.mark.parametrize("content", ['{"note": "no id"}\n{"note": "last"}\n',  # no ids: read as torn lines before
                                     '{"id": "t0", "text": "mine"}\n{"text": "no id"}\n',
                                     "not json at all\n", ""])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_output_prune_did_not_write_is_refused_and_left_byte_identical(lab_traces, tmp_path, capsys, content,
                                                                           overwrite):
    mine = tmp_path / "mine.jsonl"
    mine.write_text(content)
    assert main(["prune", "--input", str(lab_traces), "--output", str(mine), *RANDOM, *overwrite]) == 2
    assert "has no mine.jsonl.config.json beside it" in capsys.readouterr().err
    assert mine.read_text() == content and [p.name for p in tmp_path.iterdir()] == ["mine.jsonl"]


def test_a_summary_prune_did_not_write_is_refused(lab_traces, tmp_path, capsys):
    summary = tmp_path / "o.jsonl.summary.json"
    summary.write_text("my notes")
    assert main(["prune", "--input", str(lab_traces), "--output", str(tmp_path / "o.jsonl"), *RANDOM]) == 2
    assert "o.jsonl.summary.json exists but has no o.jsonl.config.json" in capsys.readouterr().err
    assert summary.read_text() == "my notes" and not (tmp_path / "o.jsonl").exists()


def test_output_equal_to_input_is_refused_before_any_work(lab_traces, tmp_path, capsys, monkeypatch):
    data = tmp_path / "in.jsonl"
    data.write_bytes(lab_traces.read_bytes())
    (tmp_path / "link.jsonl").symlink_to(data)
    monkeypatch.chdir(tmp_path)
    for given_in, given_out in [("in.jsonl", "in.jsonl"), ("in.jsonl", "./sub/../in.jsonl"),
                                ("link.jsonl", str(data)), (str(data), "link.jsonl")]:
        assert main(["prune", "--input", given_in, "--output", given_out, *RANDOM, "--overwrite"]) == 2
        assert "is also the output" in capsys.readouterr().err
    assert main(["prune", "--input", "in.jsonl", "--output", "o.jsonl", *RANDOM, "--save-dataset", "."]) == 2
    assert "lies inside the output folder" in capsys.readouterr().err
    assert data.read_bytes() == lab_traces.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "link.jsonl"]


def test_resume_with_other_settings_or_input_is_refused_and_overwrite_starts_over(lab_traces, tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    base = ["prune", "--input", str(lab_traces), "--output", str(out), "--segmenter", "lab", "--no-progress"]
    random = ["--method", "random", "--tokenizer", "lab"]
    assert main([*base, *random, "--ratio", "0.2", "--limit", "6"]) == 0
    first = out.read_bytes()
    for extra, message in [([*random, "--ratio", "0.9"], "ratio: 0.2 -> 0.9"),
                           ([*random, "--ratio", "0.2", "--seed", "1"], "seed: 0 -> 1"),
                           ([*random, "--ratio", "0.2", "--segmenter", "paragraph"], "segmenter.type: 'LabSegmenter' -> 'ParagraphSegmenter'"),
                           (["--method", "pir", "--scorer", "lab", "--ratio", "0.2"], "method: 'random' -> 'pir'")]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "use a new --output, or --overwrite" in err, err
    assert out.read_bytes() == first  # nothing touched
    changed = tmp_path / "changed.jsonl"
    rows = read_jsonl(lab_traces)
    rows[0]["answer"] = "10"
    write_jsonl(changed, rows)
    assert main([*base, *random, "--ratio", "0.2", "--input", str(changed)]) == 2
    assert "input: " in capsys.readouterr().err and out.read_bytes() == first
    assert main([*base, *random, "--ratio", "0.2"]) == 0  # the same settings: resumes (the limit may grow)
    assert json.loads(capsys.readouterr().out)["resumed_traces"] == 6
    assert main([*base, *random, "--ratio", "0.9", "--overwrite"]) == 0
    assert json.loads(capsys.readouterr().out)["resumed_traces"] == 0
    assert json.loads((tmp_path / "o.jsonl.config.json").read_text())["fingerprint"]["ratio"] == 0.9


def test_resumed_rows_must_come_from_the_same_traces(lab_traces, tmp_path):
    """The library call (recipes) checks each resumed row against its trace: the trace text is in the row."""
    from effreason.models import load_tokenizer
    from effreason.outputs import ConfigMismatchError
    from effreason.pruning import prune_to_jsonl

    traces, out, tok = load_traces(lab_traces)[:3], tmp_path / "o.jsonl", load_tokenizer("lab")
    prune_to_jsonl(traces, out, tokenizer=tok, ratio=0.5, method="random")
    edited = [dict(t) for t in traces]
    edited[1]["completion"] = edited[1]["completion"].replace("</think>", " ok </think>")
    with pytest.raises(ConfigMismatchError, match="completion of trace t1: "):
        prune_to_jsonl(edited, out, tokenizer=tok, ratio=0.5, method="random")
    assert prune_to_jsonl(traces, out, tokenizer=tok, ratio=0.5, method="random")["resumed_traces"] == 3


def test_resume_with_changed_scorer_weights_is_refused(lab_traces, tmp_path, capsys, lab_tokenizer):
    from effreason.lab.model import build_lab_model

    scorer = tmp_path / "scorer"
    build_lab_model(lab_tokenizer, seed=0).save_pretrained(scorer)
    lab_tokenizer.save_pretrained(scorer)
    base = ["prune", "--input", str(lab_traces), "--output", str(tmp_path / "o.jsonl"), "--scorer", str(scorer),
            "--segmenter", "lab", "--no-progress", "--limit", "1"]
    assert main(base) == 0
    build_lab_model(lab_tokenizer, seed=1).save_pretrained(scorer)  # same path, new weights
    assert main(base) == 2
    assert "scorer_files: " in capsys.readouterr().err


def test_a_scorer_that_fails_to_load_leaves_nothing_behind(lab_traces, tmp_path, capsys, lab_tokenizer,
                                                           untrained_lab_dir):
    import shutil

    scorer = tmp_path / "scorer"
    shutil.copytree(untrained_lab_dir, scorer)
    good = (scorer / "model.safetensors").read_bytes()
    (scorer / "model.safetensors").write_bytes(good[:1000])  # corrupt
    base = ["prune", "--input", str(lab_traces), "--output", str(tmp_path / "o.jsonl"), "--scorer", str(scorer),
            "--segmenter", "lab", "--no-progress", "--limit", "1"]
    try:
        rc = main(base)
    except Exception as e:  # (the CLI's one-line message for it is another part of issue 12)
        rc = repr(e)
    assert rc != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scorer"]
    (scorer / "model.safetensors").write_bytes(good)
    assert main(base) == 0


def test_a_running_prune_keeps_a_second_one_out(lab_traces, tmp_path, capsys, lock_holder, caplog):
    out = tmp_path / "o.jsonl"
    holder = lock_holder(tmp_path / ".o.jsonl.lock")
    assert main(["prune", "--input", str(lab_traces), "--output", str(out), *RANDOM]) == 2
    assert f"(pid {holder.pid} on " in capsys.readouterr().err and not out.exists()
    holder.kill()
    holder.wait()  # killed: its lock is stale
    assert main(["prune", "--input", str(lab_traces), "--output", str(out), *RANDOM]) == 0
    assert "taking over the lock" in caplog.text and not (tmp_path / ".o.jsonl.lock").exists()


def test_list_answers_and_traces_longer_than_the_scorers_context_are_bad_rows(lab_traces, tmp_path, capsys):
    rows = read_jsonl(lab_traces)[:3]
    rows[1]["answer"] = [rows[1]["answer"]]
    listed = tmp_path / "list.jsonl"
    write_jsonl(listed, rows)
    assert main(["prune", "--input", str(listed), "--output", str(tmp_path / "a.jsonl"), *RANDOM]) == 2
    assert "list.jsonl:2: field 'answer': expected the gold answer as a string or a number, got list" in \
        capsys.readouterr().err
    rows = read_jsonl(lab_traces)[:3]
    think, rest = rows[2]["completion"].split("</think>")
    rows[2]["completion"] = think + " s1 1 + 1 = 2 ;" * 150 + "</think>" + rest  # the lab scorer has 512 positions
    long = tmp_path / "long.jsonl"
    write_jsonl(long, rows)
    base = ["prune", "--input", str(long), "--scorer", "lab", "--segmenter", "lab", "--no-progress"]
    assert main([*base, "--output", str(tmp_path / "b.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "long.jsonl:3: field 'completion': the trace is " in err and "the scorer's context of 512" in err
    assert not (tmp_path / "b.jsonl").exists()
    _, summary = _prune_rows([*base, "--skip-bad-rows"], tmp_path / "c.jsonl")
    assert summary["prune/traces"] == 2 and summary["skipped_rows"] == 1
    assert main(["prune", "--input", str(long), "--output", str(tmp_path / "d.jsonl"), *RANDOM]) == 0  # not scored


def test_save_dataset_replaces_only_its_own_dataset(lab_traces, tmp_path, capsys):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "file.txt").write_text("precious")
    base = ["prune", "--input", str(lab_traces), "--output", str(tmp_path / "o.jsonl"), *RANDOM, "--limit", "2"]
    assert main([*base, "--save-dataset", str(keep)]) == 2
    assert "keep is not empty and was not written by effreason prune" in capsys.readouterr().err
    assert [p.name for p in keep.iterdir()] == ["file.txt"] and not (tmp_path / "o.jsonl").exists()
    assert main([*base, "--save-dataset", str(tmp_path / "ds")]) == 0
    assert main([*base, "--save-dataset", str(tmp_path / "ds")]) == 0  # its own: replaced
