"""The shipped overthinker: loads offline by name and really is accurate and verbose."""

import json

import pytest

from effreason.generation.hf import generate_hf
from effreason.grading import Grader
from effreason.lab.datasets import lab_dataset
from effreason.models import LAB_MODEL_DIR, load_model_and_tokenizer


@pytest.fixture(scope="module")
def lab_model():
    return load_model_and_tokenizer("lab", device="cpu")


def test_metrics_file_records_the_targets():
    metrics = json.loads((LAB_MODEL_DIR / "metrics.json").read_text())
    assert metrics["n"] >= 2000
    assert metrics["accuracy"] >= 0.90
    assert metrics["tokens_mean"] >= 2.5 * metrics["oracle_tokens_mean"]
    assert metrics["no_think_accuracy"] < metrics["accuracy"] - 0.5  # the chain of thought is needed


def test_greedy_accuracy_and_overthinking_on_a_test_sample(lab_model):
    model, tok = lab_model
    ds = lab_dataset("test", limit=200)
    prompts = [tok.apply_chat_template(p, add_generation_prompt=True)["input_ids"] for p in ds["prompt"]]
    gens = generate_hf(model, tok, prompts, max_new_tokens=320, batch_size=100)
    with Grader("exact") as grader:
        accuracy = sum(r.correct for r in grader.grade_batch([g.text for g in gens], ds["answer"])) / len(ds)
    oracle = sum(len(tok(s, add_special_tokens=False)["input_ids"]) + 1 for s in ds["solution"]) / len(ds)
    tokens = sum(g.num_tokens for g in gens) / len(ds)
    assert accuracy >= 0.85, accuracy
    assert tokens >= 2.3 * oracle, (tokens, oracle)
    assert all(g.finished for g in gens)
