import random

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from effreason.format import split_thinking
from effreason.grading import Grader
from effreason.lab.datasets import SPLITS, lab_dataset, lab_problems
from effreason.lab.model import build_lab_model, lab_model_config
from effreason.lab.task import MODULUS, Difficulty, Problem, apply, parse_problem, sample_problem
from effreason.lab.traces import (
    CONCISE,
    PROGRESSIVE,
    SLIP,
    SLIPPY,
    VERBOSE,
    oracle_trace,
    slip_value,
    write_trace,
)


def test_apply_is_modular():
    assert apply("+", 7, 5) == 1 and apply("-", 2, 8) == 5 and apply("*", 7, 7) == 5
    with pytest.raises(ValueError, match="unknown operation"):
        apply("/", 1, 2)


def test_problem_text_roundtrip_and_answer():
    p = Problem(4, (("+", 2), ("-", 3), ("*", 6)))
    assert p.text() == "start 4 ; s1 + 2 ; s2 - 3 ; s3 * 6 ; ( mod 11 )"
    assert p.values() == [6, 3, 7] and p.answer == 7
    assert parse_problem(p.text()) == p
    with pytest.raises(ValueError, match="not a lab problem"):
        parse_problem("start 4 ; s2 + 2 ; ( mod 11 )")


def test_difficulty_bounds_and_sampling():
    with pytest.raises(ValueError, match="min_steps"):
        Difficulty(5, 3)
    rng = random.Random(0)
    problems = [sample_problem(rng, Difficulty(2, 4)) for _ in range(300)]
    assert {p.num_steps for p in problems} == {2, 3, 4}
    assert all(b != 0 for p in problems for _, b in p.ops)
    assert all(0 <= v < MODULUS for p in problems for v in p.values())


def test_oracle_trace_is_minimal_and_correct():
    p = Problem(4, (("+", 2), ("-", 3), ("*", 6)))
    trace = oracle_trace(p)
    assert [kind for kind, _ in trace.segments] == [PROGRESSIVE] * 3
    assert trace.text == "<think> s1 4 + 2 = 6 ; s2 6 - 3 = 3 ; s3 3 * 6 = 7 ; </think> the answer is \\boxed{ 7 }"


def test_trace_styles_differ_in_functional_steps_and_stay_correct():
    rng = random.Random(1)
    problems = [sample_problem(rng, Difficulty(3, 6)) for _ in range(200)]
    grader = Grader("exact")
    functional = {}
    for name, style in (("verbose", VERBOSE), ("concise", CONCISE)):
        traces = [write_trace(p, style, rng) for p in problems]
        functional[name] = sum(k != PROGRESSIVE for t in traces for k, _ in t.segments) / len(traces)
        assert all(grader.grade(t.text, str(p.answer)).correct for t, p in zip(traces, problems, strict=True))
        kinds = {k for t in traces for k, _ in t.segments}
        if name == "verbose":
            assert {"verification", "recompute", "error", "correction", "final_check"} <= kinds
    assert functional["verbose"] > 4 and functional["concise"] < 0.5
    # an error is always followed by its correction
    for t in (write_trace(p, VERBOSE, rng) for p in problems):
        kinds = [k for k, _ in t.segments]
        assert all(kinds[i + 1] == "correction" for i, k in enumerate(kinds) if k == "error")


def test_slippy_traces_carry_slips_and_the_final_check_catches_them(lab_tokenizer):
    # 3 - 5 should wrap to 9; the slippy writer writes 2 and carries it: 2 * 6 = 1 instead of 9 * 6 = 10
    p = Problem(3, (("-", 5), ("*", 6)))
    assert slip_value("-", 3, 5) == 2 and slip_value("-", 5, 3) is None and slip_value("+", 3, 5) is None
    trace = write_trace(p, SLIPPY, random.Random(0))
    steps = [text for kind, text in trace.segments if kind in (PROGRESSIVE, SLIP)]
    assert steps == ["s1 3 - 5 = 2 ;", "s2 2 * 6 = 1 ;"]
    assert trace.segments[-1][0] == "final_check"
    assert trace.segments[-1][1].endswith(": 3 - 5 = 9 , 9 * 6 = 10 . that is wrong ;")
    assert trace.answer == p.answer == 10 and trace.text.endswith("\\boxed{ 10 }")
    rng = random.Random(2)
    problems = [sample_problem(rng, Difficulty(3, 6)) for _ in range(300)]
    traces = [write_trace(q, SLIPPY, rng) for q in problems]
    grader = Grader("exact")
    assert all(grader.grade(t.text, str(q.answer)).correct for t, q in zip(traces, problems, strict=True))
    caught = [t for t in traces if "that is wrong ;" in t.text]
    assert 0.4 < len(caught) / len(traces) < 0.7  # about half the problems have a slip that reaches the answer
    assert all(t.segments[-1][0] == "final_check" for t in caught)
    # every wrap-around subtraction of the written chain slipped
    for t in traces:
        for kind, text in t.segments:
            if kind in (PROGRESSIVE, SLIP):
                _, a, op, b, _, c, _ = text.split()
                assert (kind == SLIP) == (slip_value(op, int(a), int(b)) is not None)
                assert int(c) == (slip_value(op, int(a), int(b)) if kind == SLIP else apply(op, int(a), int(b)))
    ids = lab_tokenizer(caught[0].text, add_special_tokens=False)["input_ids"]
    assert lab_tokenizer.unk_token_id not in ids


def test_tokenizer_roundtrip_no_unknowns_and_reload_keeps_ids(lab_tokenizer, untrained_lab_dir):
    p = sample_problem(random.Random(3), Difficulty(6, 6))
    text = write_trace(p, VERBOSE, random.Random(3)).text
    ids = lab_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert lab_tokenizer.unk_token_id not in ids
    assert lab_tokenizer.decode(ids) == text
    reloaded = AutoTokenizer.from_pretrained(untrained_lab_dir)  # what TRL, PEFT and vLLM do
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids
    prompt = reloaded.apply_chat_template([{"role": "user", "content": p.text()}], tokenize=False,
                                          add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>user start") and prompt.endswith("<|im_start|>assistant ")
    assert split_thinking(reloaded.decode(ids)).answer.strip() == f"the answer is \\boxed{{ {p.answer} }}"


def test_model_config_supported_head_size_and_reload(lab_tokenizer, untrained_lab_dir):
    with pytest.raises(ValueError, match="head size"):
        lab_model_config(lab_tokenizer, hidden_size=128, num_heads=16)
    model = AutoModelForCausalLM.from_pretrained(untrained_lab_dir)
    assert model.config.head_dim == 32 and model.config.vocab_size == len(lab_tokenizer)
    fresh = build_lab_model(lab_tokenizer, seed=0)
    assert all((a == b).all() for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True))


def test_lab_splits_columns_sizes_and_disjointness():
    test = lab_dataset("test")
    assert test.column_names == ["id", "problem", "prompt", "answer", "solution"]
    assert len(test) == SPLITS["test"][0] >= 2000
    assert len(set(test["problem"])) == len(test)
    train = set(lab_problems("train"))
    assert not train & set(lab_problems("test")) and not train & set(lab_problems("hard"))
    hard = lab_dataset("hard", limit=50)
    assert min(parse_problem(p).num_steps for p in hard["problem"]) > max(
        parse_problem(p).num_steps for p in test["problem"])
    assert lab_dataset("test", limit=5)["problem"] == test["problem"][:5]  # deterministic
    with pytest.raises(ValueError, match="unknown lab split"):
        lab_problems("validation")


def test_lab_warm_up_steps_lower_the_loss_and_refuse_too_few_examples(untrained_lab_dir):
    import torch

    from effreason.lab.trainers.bootstrap import collate
    from effreason.lab.trainers.levels import warm_up_levels
    from effreason.lab.trainers.warmup import sft_steps, style_examples
    from effreason.models import load_model_and_tokenizer

    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(untrained_lab_dir), device="cpu", dtype="float32")
    examples = style_examples(tokenizer, {"slippy": 0.5, "slippy_terse": 0.5}, 8, seed=0)

    def loss() -> float:
        with torch.no_grad():
            ids, attention, labels = collate(examples, tokenizer.pad_token_id)
            return model(input_ids=ids, attention_mask=attention, labels=labels).loss.item()

    before = loss()
    sft_steps(model, tokenizer, examples, steps=4, batch_size=2, learning_rate=3e-3, cosine=True, warmup_steps=1)
    assert loss() < before
    with pytest.raises(ValueError, match="fewer than the 5 steps"):
        sft_steps(model, tokenizer, examples, steps=5, batch_size=2)
    with pytest.raises(ValueError, match="unknown lab trace styles"):
        style_examples(tokenizer, {"slipy": 1.0}, 2, seed=0)
    # the TLDR level warm-up runs through the same loop
    assert warm_up_levels(model, tokenizer, {"short": "be brief", "long": "be detailed"}, steps=2, batch_size=2) > 0


def test_dev_split_is_disjoint_from_every_other_split():
    dev = lab_problems("dev")
    assert len(dev) == len(set(dev)) == SPLITS["dev"][0]
    assert not set(dev) & (set(lab_problems("train")) | set(lab_problems("test")) | set(lab_problems("hard")))
    assert all(3 <= p.num_steps <= 6 for p in dev)  # the default difficulty, like test


def test_warm_up_checks_fail_the_shipped_overthinker():
    # the overthinker neither slips nor reads a length level: both warm-up checks must say so
    from effreason.lab.trainers.levels import levels_check
    from effreason.lab.trainers.warmup import slippy_check
    from effreason.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer("lab", device="cpu", dtype="float32")
    slippy = slippy_check(model, tokenizer, limit=8)
    assert slippy["accuracy"] >= 0.9 and slippy["slip_rate"] == 0.0 and not slippy["passed"]
    levels = levels_check(model, tokenizer, {"short": "level short", "long": "level long"}, limit=4)
    assert levels["short"]["accuracy"] >= 0.8 and not levels["passed"]  # same length at both levels


def test_gated_warm_up_trains_until_its_check_passes_or_time_is_up(untrained_lab_dir, monkeypatch):
    import torch

    from effreason.lab.trainers import warmup
    from effreason.lab.trainers.bootstrap import GateFailed
    from effreason.models import load_model_and_tokenizer

    monkeypatch.setattr(warmup, "GATE_EVERY", 2)
    model, tokenizer = load_model_and_tokenizer(str(untrained_lab_dir), device="cpu", dtype="float32")
    before = [p.clone() for p in model.parameters()]
    examples = warmup.style_examples(tokenizer, {"slippy": 1.0}, 64, seed=0)
    verdicts = iter([False, True])
    checks = warmup.gated_warmup(model, tokenizer, lambda: {"passed": next(verdicts)}, lambda r: examples,
                                 learning_rate=1e-3, deadline=float("inf"), seed=0, name="test")
    assert checks == [{"step": 0, "passed": False}, {"step": 2, "passed": True}]
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    trained = [p.clone() for p in model.parameters()]
    checks = warmup.gated_warmup(model, tokenizer, lambda: {"passed": True}, lambda r: examples, learning_rate=1e-3,
                                 deadline=0.0, seed=0, name="test")
    assert checks == [{"step": 0, "passed": True}]  # passing at once: no step, weights as they were
    assert all(torch.equal(a, b) for a, b in zip(trained, model.parameters(), strict=True))
    with pytest.raises(GateFailed, match="missed its dev check") as failed:
        warmup.gated_warmup(model, tokenizer, lambda: {"passed": False}, lambda r: examples, learning_rate=1e-3,
                            deadline=0.0, seed=0, name="test")
    assert failed.value.checks == [{"step": 0, "passed": False}]
