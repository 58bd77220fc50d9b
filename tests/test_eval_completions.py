"""``effreason eval --completions``: grading text produced elsewhere, with hand-computed figures."""

import json

import pytest

from effreason.cli import main
from effreason.lab.tokenizer import build_lab_tokenizer

RIGHT = "<think> s1 1 + 2 = 3 ; </think> the answer is \\boxed{ 3 }"  # 9 thinking + 6 answer lab tokens
WRONG = "<think> s1 1 + 2 = 4 ; </think> the answer is \\boxed{ 4 }"
CUT = "<think> s1 1 + 2 = 3 ; s2"  # thinking never closed: 9 tokens, all thinking
NONE = "let me check"  # no answer at all: 3 tokens, all answer


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("lab_tokenizer")
    build_lab_tokenizer().save_pretrained(path)
    return str(path)


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def results(out):
    return json.loads((out / "results.json").read_text())


def test_grades_and_token_figures(tmp_path, tokenizer_dir):
    data = write(tmp_path / "c.jsonl", [{"id": f"q{i}", "completion": c, "answer": "3"}
                                       for i, c in enumerate([RIGHT, WRONG, CUT, NONE])])
    out = tmp_path / "graded"
    assert main(["eval", "--completions", data, "--tokenizer", tokenizer_dir, "--output", str(out)]) == 0
    r = results(out)
    assert r["accuracy"] == 0.25 and r["n"] == 4
    assert r["grade_reasons"] == {"correct": 1, "no_answer": 1, "truncated": 1, "wrong": 1}
    assert r["truncation_rate"] == 0.25  # no `finished` field: truncated = thinking never closed
    assert r["tokens_mean"] == pytest.approx((15 + 15 + 9 + 3) / 4)
    assert r["thinking_tokens_mean"] == pytest.approx((9 + 9 + 9 + 0) / 4)
    assert r["answer_tokens_mean"] == pytest.approx((6 + 6 + 0 + 3) / 4)
    assert r["eff"] == pytest.approx(0.25 / 10.5) and r["token_stats_available"]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [row["extracted"] for row in rows] == ["3", "4", None, None]


def test_a_prompt_that_opened_thinking_makes_unclosed_text_thinking(tmp_path, tokenizer_dir):
    """R1-Distill's template ends the prompt with <think>: a completion without </think> was cut off."""
    prompt = "<|im_start|>user s1 1 + 2 <|im_end|> <|im_start|>assistant <think>"
    rows = [{"prompt": prompt, "completion": "s1 1 + 2 = 3 ; s2", "answer": "3"},
            {"prompt": prompt, "completion": "s1 1 + 2 = 3 ; </think> the answer is \\boxed{ 3 }", "answer": "3"}]
    out = tmp_path / "graded"
    assert main(["eval", "--completions", write(tmp_path / "c.jsonl", rows), "--tokenizer", tokenizer_dir,
                 "--last-number-fallback", "--output", str(out)]) == 0
    graded = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [g["reason"] for g in graded] == ["truncated", "correct"]
    assert [g["truncated"] for g in graded] == [True, False]
    assert (graded[0]["thinking_tokens"], graded[0]["answer_tokens"]) == (8, 0)
    assert (graded[1]["thinking_tokens"], graded[1]["answer_tokens"]) == (8, 6) and graded[1]["completion"] == rows[1]["completion"]


def test_without_a_tokenizer_there_are_no_token_figures(tmp_path):
    data = write(tmp_path / "c.jsonl", [{"completion": RIGHT, "answer": 3}, {"completion": WRONG, "answer": 3}])
    out = tmp_path / "graded"
    assert main(["eval", "--completions", data, "--output", str(out)]) == 0
    r = results(out)
    assert r["accuracy"] == 0.5
    assert r["tokens_mean"] is None and r["eff"] is None and not r["token_stats_available"]


def test_field_names_and_finished_flag(tmp_path):
    rows = [{"key": "a", "out": RIGHT, "gold": "3", "finished": True},
            {"key": "b", "out": RIGHT, "gold": "3", "finished": False}]
    data = write(tmp_path / "c.jsonl", rows)
    out = tmp_path / "graded"
    argv = ["eval", "--completions", data, "--completion-field", "out", "--answer-field", "gold", "--id-field", "key",
            "--grading", "exact", "--output", str(out)]
    assert main(argv) == 0
    r = results(out)
    assert r["accuracy"] == 1.0 and r["truncation_rate"] == 0.5  # `finished: false` counts as truncated
    assert r["config"]["grading"] == "exact"


def test_bad_rows_name_file_line_and_field(tmp_path, capsys):
    data = write(tmp_path / "c.jsonl", [{"completion": RIGHT, "answer": "3"}, {"text": RIGHT, "answer": "3"}])
    assert main(["eval", "--completions", data, "--output", str(tmp_path / "o")]) == 2
    assert "c.jsonl:2: field 'completion': missing" in capsys.readouterr().err
    assert main(["eval", "--completions", data, "--model", "lab", "--output", str(tmp_path / "o")]) == 2
    assert "drop --model" in capsys.readouterr().err
