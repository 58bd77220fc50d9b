"""Benchmark loaders: local copies, Hub-shaped rows, the lab hook, malformed files, custom JSONL."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import datasets
import pytest

import effreason.benchmarks as benchmarks_module
from effreason.benchmarks import (
    BENCHMARKS,
    COLUMNS,
    DATA_DIR_ENV,
    BenchmarkSpec,
    RowSource,
    load_benchmark,
    load_jsonl_benchmark,
    normalise_aime24,
    normalise_aime25,
    normalise_amc23,
    normalise_gsm8k,
    normalise_math500,
    register_benchmark,
)
from effreason.format import MATH_INSTRUCTION, chat_prompt
from effreason.jsonl import DataError

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_DIR = Path(os.environ.get("EFFREASON_BENCHMARKS_DIR", REPO.parent / "shared" / "data" / "benchmarks"))
needs_data = pytest.mark.skipif(
    not BENCHMARKS_DIR.is_dir(),
    reason=f"benchmark copies not found at {BENCHMARKS_DIR} (set EFFREASON_BENCHMARKS_DIR)",
)
SOURCE = RowSource(path="hub", line=1, index=0, split="test")


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --- the local copies ------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    ("name", "split", "rows"),
    [("gsm8k", "test", 1319), ("gsm8k", "train", 7473), ("math500", "test", 500), ("aime24", "test", 30),
     ("aime25", "test", 30), ("amc23", "test", 40)],
)
def test_local_benchmarks_load_with_columns(name, split, rows):
    data = load_benchmark(name, data_dir=BENCHMARKS_DIR, split=split)
    assert len(data) == rows
    assert tuple(data.column_names) == COLUMNS
    assert len(set(data["id"])) == rows
    first = data[0]
    assert all(isinstance(first[c], str) for c in ("id", "problem", "answer", "solution"))
    assert first["prompt"] == chat_prompt(first["problem"], instruction=MATH_INSTRUCTION)
    assert all(answer.strip() == answer and answer for answer in data["answer"])


@needs_data
def test_local_golds_are_normalised():
    gsm8k = load_benchmark("gsm8k", data_dir=BENCHMARKS_DIR)
    assert gsm8k[0]["id"] == "gsm8k/test/0"
    assert gsm8k[0]["answer"] == "18"  # Janet's ducks: (16 - 3 - 4) * 2
    assert gsm8k[0]["solution"].endswith("#### 18")
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", a) for a in gsm8k["answer"])  # commas removed

    math500 = load_benchmark("math500", data_dir=BENCHMARKS_DIR)
    assert math500[0]["id"] == "test/precalculus/807.json"
    assert math500[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert "\\boxed" in math500[0]["solution"]

    aime24 = load_benchmark("aime24", data_dir=BENCHMARKS_DIR)
    assert aime24[0]["id"] == "aime24/60"
    assert aime24[0]["answer"] == "204"

    aime25 = load_benchmark("aime25", data_dir=BENCHMARKS_DIR)
    assert aime25[0]["answer"] == "70"
    assert aime25[0]["id"] == "aime25/0"
    assert not any(p.endswith("\\boxed{}.") for p in aime25["problem"])  # suffix stripped
    assert aime25[0]["prompt"][0]["content"].count(MATH_INSTRUCTION) == 1
    assert aime25[0]["solution"] == ""

    amc23 = load_benchmark("amc23", data_dir=BENCHMARKS_DIR)
    assert amc23[0]["answer"] == "27"  # 27.0 in the file
    assert "-1" in amc23["answer"]
    assert amc23[0]["id"] == "amc23/0"


@needs_data
def test_limit_and_env_default(monkeypatch):
    assert len(load_benchmark("math500", data_dir=BENCHMARKS_DIR, limit=3)) == 3
    assert len(load_benchmark("amc23", data_dir=BENCHMARKS_DIR, limit=0)) == 0
    assert len(load_benchmark("amc23", data_dir=BENCHMARKS_DIR, limit=1000)) == 40
    monkeypatch.setenv(DATA_DIR_ENV, str(BENCHMARKS_DIR))
    assert load_benchmark("aime24", limit=2)["id"] == ["aime24/60", "aime24/61"]


def test_limit_stops_before_later_bad_rows(tmp_path):
    write_jsonl(tmp_path / "amc23" / "test.jsonl", [{"id": 1, "problem": "p", "answer": 2.0}, "{not json"])
    assert load_benchmark("amc23", data_dir=tmp_path, limit=1)["answer"] == ["2"]
    with pytest.raises(DataError, match=r"test\.jsonl:2"):
        load_benchmark("amc23", data_dir=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        load_benchmark("amc23", data_dir=tmp_path, limit=-1)


# --- specs, names, splits --------------------------------------------------------------------------


def test_specs():
    assert set(BENCHMARKS) == {"gsm8k", "math500", "math", "aime24", "aime25", "amc23", "lab", "lab_hard",
                               "lab_mixed"}
    assert all(isinstance(spec, BenchmarkSpec) for spec in BENCHMARKS.values())
    assert [n for n, s in BENCHMARKS.items() if s.last_number_fallback] == ["gsm8k"]
    assert {n for n, s in BENCHMARKS.items() if s.grading_mode == "exact"} == {"lab", "lab_hard", "lab_mixed"}
    assert BENCHMARKS["lab"].instruction is None and BENCHMARKS["math500"].instruction == MATH_INSTRUCTION
    assert BENCHMARKS["gsm8k"].local_paths == {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"}
    assert BENCHMARKS["aime24"].splits == {"test": "train"}  # the Hub copy calls its only split "train"
    assert BENCHMARKS["lab"].answer_prefix == " the answer is \\boxed{" and BENCHMARKS["lab"].max_new_tokens == 384
    assert BENCHMARKS["lab_hard"].max_new_tokens == 384 and BENCHMARKS["lab_hard"].loader is not None
    assert BENCHMARKS["math500"].answer_prefix == "\n\nThe final answer is \\boxed{"
    assert {s.max_new_tokens for n, s in BENCHMARKS.items() if not n.startswith("lab")} == {4096}


def test_unknown_benchmark_and_split():
    with pytest.raises(ValueError, match="unknown benchmark 'gsm9k'.*gsm8k, math500, aime24"):
        load_benchmark("gsm9k")
    with pytest.raises(ValueError, match="no split 'train'.*test"):
        load_benchmark("math500", split="train")


# --- malformed files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rows", "line", "field"),
    [
        ("gsm8k", [{"question": "q", "answer": "a\n#### 1"}, {"question": "q", "answer": "no marker"}], 2, "answer"),
        ("gsm8k", [{"answer": "a\n#### 1"}], 1, "question"),
        ("math500", [{"problem": "p", "solution": "s", "answer": ["1"], "unique_id": "u"}], 1, "answer"),
        ("math500", [{"problem": "p", "solution": "s", "answer": "1", "unique_id": 7}], 1, "unique_id"),
        ("aime24", [{"id": 1, "problem": 5, "solution": "s", "answer": "1"}], 1, "problem"),
        ("aime25", [{"prompt": "p", "answer": 1}, {"prompt": "p"}], 2, "answer"),
        ("aime25", [{"answer": 1}], 1, "problem or prompt"),
        ("amc23", [{"id": 0, "problem": "p", "answer": True}], 1, "answer"),
        ("amc23", [{"id": 0.5, "problem": "p", "answer": 1.0}], 1, "id"),
    ],
)
def test_malformed_rows_name_file_line_field(tmp_path, name, rows, line, field):
    path = write_jsonl(tmp_path / name / "test.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_benchmark(name, data_dir=tmp_path)
    message = str(info.value)
    assert f"{path}:{line}" in message
    assert f"field '{field}'" in message


def test_bad_json_and_missing_file(tmp_path):
    path = write_jsonl(tmp_path / "math500" / "test.jsonl", ["{\"problem\": "])
    with pytest.raises(DataError, match=re.escape(f"{path}:1") + ".*invalid JSON"):
        load_benchmark("math500", data_dir=tmp_path)
    with pytest.raises(DataError, match="aime24.*file not found"):
        load_benchmark("aime24", data_dir=tmp_path)


# --- Hub-shaped rows -------------------------------------------------------------------------------


def test_normalisers_accept_hub_shaped_rows():
    gsm8k = {"question": "How many?", "answer": "2 + 2 = <<2+2=4>>4\n#### 1,004"}
    assert normalise_gsm8k(gsm8k, RowSource("hub", 5, 4, "train")) == {
        "id": "gsm8k/train/4", "problem": "How many?", "answer": "1004", "solution": gsm8k["answer"]}
    math500 = {"problem": "p", "solution": "so \\boxed{3}", "answer": "3", "subject": "Algebra", "level": 2,
               "unique_id": "test/algebra/1.json"}
    assert normalise_math500(math500, SOURCE) == {"id": "test/algebra/1.json", "problem": "p", "answer": "3",
                                                  "solution": "so \\boxed{3}"}
    aime24 = {"id": 60, "problem": "p", "solution": "s", "answer": "204", "url": "u", "year": "2024"}
    assert normalise_aime24(aime24, SOURCE) == {"id": "aime24/60", "problem": "p", "answer": "204", "solution": "s"}
    aime25 = {"problem": "p", "answer": "70", "id": "0"}
    assert normalise_aime25(aime25, SOURCE) == {"id": "aime25/0", "problem": "p", "answer": "70", "solution": ""}
    amc23 = {"id": 3, "question": "q", "answer": 2.5, "url": "u"}
    assert normalise_amc23(amc23, SOURCE) == {"id": "amc23/3", "problem": "q", "answer": "2.5", "solution": ""}


def test_hub_path_uses_hub_ids_and_the_shared_normaliser(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list([{"question": "q1", "answer": "x\n#### 7"},
                                           {"question": "q2", "answer": "y\n#### 2,000"}])

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_benchmark("gsm8k", split="train")
    assert calls == [("openai/gsm8k", "main", "train")]
    assert data["answer"] == ["7", "2000"] and data["id"] == ["gsm8k/train/0", "gsm8k/train/1"]

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list([{"question": "q"}]))
    with pytest.raises(DataError, match=r"openai/gsm8k\[test\]:1: field 'answer'"):
        load_benchmark("gsm8k")


# --- the lab ---------------------------------------------------------------------------------------


def test_lab_benchmarks_call_lab_dataset(monkeypatch):
    calls = []

    def lab_dataset(split: str) -> datasets.Dataset:
        calls.append(split)
        rows = [{"id": f"lab/{split}/{i}", "problem": "s1 7 + 5", "prompt": chat_prompt("s1 7 + 5"), "answer": "1",
                 "solution": "<think> s1 7 + 5 = 1 </think> the answer is \\boxed{ 1 }"} for i in range(5)]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setitem(sys.modules, "effreason.lab.datasets", types.SimpleNamespace(lab_dataset=lab_dataset))
    assert len(load_benchmark("lab", split="train", limit=2)) == 2
    assert load_benchmark("lab_hard")["id"][0] == "lab/hard/0"
    assert load_benchmark("lab_hard", split="hard", limit=10).column_names == list(COLUMNS)
    assert calls == ["train", "hard", "hard"]
    with pytest.raises(ValueError, match="no split 'train'"):
        load_benchmark("lab_hard", split="train")


def test_evaluation_knows_the_lab_only_through_its_specs():
    code = ("import sys; import effreason.benchmarks as b, effreason.evaluation.cli, effreason.evaluation.runner, "
            "effreason.evaluation.completions, effreason.generation.budget_forcing, effreason.grading, "
            "effreason.rewards; "
            "loaded = lambda: any(m.startswith('effreason.lab') for m in sys.modules); "
            "before = loaded(); 'lab' in b.BENCHMARKS and list(b.BENCHMARKS); "
            "spec = b.BENCHMARKS['lab']; print(before, loaded(), spec.max_new_tokens)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "384"]  # imported on lookup, not before


def test_register_benchmark(monkeypatch):
    def loader(split):
        return datasets.Dataset.from_list([{"id": f"toy/{split}/{i}", "problem": "p", "prompt": chat_prompt("p"),
                                            "answer": str(i), "solution": ""} for i in range(3)])

    spec = BenchmarkSpec(name="toy", splits={"test": "dev"}, loader=loader, max_new_tokens=64)
    monkeypatch.setattr(benchmarks_module.BENCHMARKS, "_specs", dict(benchmarks_module.BENCHMARKS._specs))
    register_benchmark(spec)
    assert "toy" in BENCHMARKS and BENCHMARKS["toy"] is spec and "toy" in list(BENCHMARKS)
    assert load_benchmark("toy", limit=2)["id"] == ["toy/dev/0", "toy/dev/1"]
    with pytest.raises(ValueError, match="exactly one of normalise"):
        BenchmarkSpec(name="bad", splits={"test": "test"})


# --- any JSONL file --------------------------------------------------------------------------------


def test_load_jsonl_benchmark_custom_fields(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"q": "What is 1+1?", "gold": 2, "key": "a", "solution": "1+1=2"},
        {"q": "What is 0.5+1?", "gold": 1.5, "key": 7},
        {"q": "What is 2+2?", "gold": " 4 ", "key": "c"},
    ])
    data = load_jsonl_benchmark(path, prompt_field="q", answer_field="gold", id_field="key",
                                instruction="Answer briefly.")
    assert tuple(data.column_names) == COLUMNS
    assert data["id"] == ["a", "7", "c"]
    assert data["answer"] == ["2", "1.5", "4"]
    assert data["solution"] == ["1+1=2", "", ""]
    assert data[0]["prompt"] == [{"role": "user", "content": "What is 1+1?\nAnswer briefly."}]
    default_ids = load_jsonl_benchmark(path, prompt_field="q", answer_field="gold", limit=2)
    assert default_ids["id"] == ["mine/0", "mine/1"]
    assert default_ids[0]["prompt"] == [{"role": "user", "content": "What is 1+1?"}]


def test_load_jsonl_benchmark_errors_name_field(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [{"problem": "p", "answer": "1"}, {"problem": "p"}])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: field 'answer'")):
        load_jsonl_benchmark(path)
    with pytest.raises(DataError, match=re.escape(f"{path}:1: field 'key'")):
        load_jsonl_benchmark(path, id_field="key")
