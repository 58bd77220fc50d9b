"""The eval output directory: torn lines, refusing to mix configs, overwrite; the result summaries."""

import json

import pytest

from effreason.evaluation import report, store
from effreason.jsonl import DataError


def row(i, sample=0, budget=None, correct=True, tokens=10, extracted="1", **extra):
    return {"id": f"p{i}", "sample": sample, "budget": budget, "correct": correct, "extracted": extracted,
            "reason": "correct" if correct else "wrong", "tokens": tokens, "thinking_tokens": tokens - 2,
            "answer_tokens": 2, "truncated": False, "forced": False, **extra}


def test_read_samples_drops_a_torn_last_line(tmp_path, caplog):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(row(0)) + "\n" + json.dumps(row(1)) + "\n" + '{"id": "p2", "sam')
    rows, torn = store.read_samples(path)
    assert [r["id"] for r in rows] == ["p0", "p1"] and torn
    assert "torn" in caplog.text


def test_read_samples_rejects_a_bad_middle_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(row(0)) + "\nnot json\n" + json.dumps(row(1)) + "\n")
    with pytest.raises(DataError, match=r"samples.jsonl:2"):
        store.read_samples(path)


def test_claim_resumes_only_the_same_run(tmp_path):
    assert not store.claim(tmp_path, {"model": "a", "temperature": 0.0}, {}, overwrite=False)  # fresh
    (tmp_path / store.SAMPLES_FILE).write_text(json.dumps(row(0)) + "\n")
    assert store.claim(tmp_path, {"model": "a", "temperature": 0.0}, {}, overwrite=False)  # same: resumes
    with pytest.raises(store.ConfigMismatchError, match=r"temperature: 0.0 -> 0.7.*--overwrite"):
        store.claim(tmp_path, {"model": "a", "temperature": 0.7}, {}, overwrite=False)
    assert not store.claim(tmp_path, {"model": "a", "temperature": 0.7}, {}, overwrite=True)
    assert not (tmp_path / store.SAMPLES_FILE).exists()
    saved = json.loads((tmp_path / store.CONFIG_FILE).read_text())
    assert saved["written_by"] == "effreason eval" and saved["fingerprint"]["temperature"] == 0.7


def test_a_config_without_rows_is_replaced(tmp_path):
    """What a run that failed to load its model leaves (config.json, no rows) does not block the next one."""
    store.claim(tmp_path, {"model": "broken"}, {}, overwrite=False)
    (tmp_path / store.SAMPLES_FILE).write_text("")
    assert not store.claim(tmp_path, {"model": "fixed"}, {}, overwrite=False)
    assert json.loads((tmp_path / store.CONFIG_FILE).read_text())["fingerprint"] == {"model": "fixed"}


@pytest.mark.parametrize("name,content", [(store.SAMPLES_FILE, json.dumps(row(0)) + "\n"),
                                          (store.RESULTS_FILE, '{"mine": 1}'), (store.SUMMARY_FILE, "# notes"),
                                          (store.CONFIG_FILE, '{"model_type": "qwen3"}')])
@pytest.mark.parametrize("overwrite", [False, True])
def test_files_eval_did_not_write_are_refused_and_kept(tmp_path, name, content, overwrite):
    (tmp_path / name).write_text(content)
    with pytest.raises(FileExistsError, match="choose another output"):
        store.claim(tmp_path, {"model": "a"}, {}, overwrite=overwrite)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name] and (tmp_path / name).read_text() == content


def test_summarize_by_hand():
    rows = [row(0, tokens=10), row(1, tokens=20, correct=False, extracted="2"), row(2, tokens=30),
            row(3, tokens=100, correct=False, truncated=True)]
    # budget rows: budget 8 has 1 of 4 right, budget 16 has 3 of 4
    rows += [row(i, budget=8, correct=i == 0, tokens=9, forced=i > 0) for i in range(4)]
    rows += [row(i, budget=16, correct=i != 3, tokens=12) for i in range(4)]
    r = report.summarize(rows, budgets=[8, 16])
    assert r["accuracy"] == 0.5 and r["n"] == 4
    assert r["tokens_mean"] == 40 and r["tokens_median"] == 25 and r["tokens_max"] == 100
    assert r["thinking_tokens_mean"] == 38 and r["answer_tokens_mean"] == 2
    assert r["truncation_rate"] == 0.25
    assert r["eff"] == pytest.approx(0.5 / 40) and r["accuracy_per_1k_tokens"] == pytest.approx(12.5)
    assert r["budgets"]["8"]["accuracy"] == 0.25 and r["budgets"]["8"]["forced_rate"] == 0.75
    assert r["budgets"]["16"]["tokens_mean"] == 12
    assert r["budget_auc"] == pytest.approx((0.25 + 0.75) / 2)
    assert r["grade_reasons"] == {"correct": 2, "wrong": 2}
    assert "majority_accuracy" not in r


def test_summarize_k_samples_and_no_tokens():
    rows = [row(0, s, extracted=a, correct=a == "3") for s, a in enumerate(["3", "4", "3"])]
    rows += [row(1, s, extracted=a, correct=a == "6") for s, a in enumerate(["5", "5", "6"])]
    r = report.summarize(rows, samples_per_problem=3, has_tokens=False)
    assert r["accuracy"] == r["accuracy_mean_at_k"] == pytest.approx(3 / 6)
    assert r["majority_accuracy"] == 0.5 and r["pass_at_k"] == 1.0
    assert r["tokens_mean"] is None and r["eff"] is None  # never characters posing as tokens


def test_baseline_figures():
    vs = report.baseline_figures({"accuracy": 0.88, "tokens_mean": 60.0}, {"accuracy": 0.8, "tokens_mean": 100.0})
    assert vs["token_reduction"] == pytest.approx(0.4) and vs["aes"] == pytest.approx(0.7)
    assert vs["aes_weights"] == {"a": 1.0, "b": 3.0, "c": 5.0}
    md = report.summary_markdown({"n": 1, "samples_per_problem": 1, "accuracy": 0.88, "tokens_mean": 60.0,
                                  "vs_baseline": {"baseline": "b", **vs}})
    assert "AES 0.700" in md and "a=1.0, b=3.0, c=5.0" in md
