"""Test-time methods on the HF backend: thinking-stop scaling, s1 with "Wait", short-m@k / first-finish, the leaderboard.

The vLLM side (the same greedy completions, stopped samples that are prefixes of complete ones) is in
``test_test_time_vllm.py``.
"""

import json
import random
from types import SimpleNamespace

import pytest
import torch

from effreason.evaluation import leaderboard
from effreason.evaluation.config import EvalConfig
from effreason.evaluation.runner import run_eval
from effreason.generation import parallel, s1, thinking_stop
from effreason.generation.backends import HFBackend, Sampling
from effreason.generation.types import Generation
from effreason.models import LAB_MODEL_DIR

needs_lab = pytest.mark.skipif(not (LAB_MODEL_DIR / "config.json").is_file(), reason="needs the shipped lab checkpoint")


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# --- thinking-stop scaling ---------------------------------------------------------------------------

def test_thinking_rows_and_the_vllm_request_state_agree(lab_tokenizer):
    start, end = thinking_stop.marker_ids(lab_tokenizer)
    rng = random.Random(0)
    for _ in range(200):
        prompt = [rng.choice([start, end, 7, 8, 9]) for _ in range(rng.randint(0, 6))]
        output = [rng.choice([start, end, 7, 8]) for _ in range(rng.randint(0, 8))]
        apply = thinking_stop.request_processor(1.5, start, end)
        for t in range(len(output) + 1):  # the vLLM processor reads the growing output step by step
            logits = torch.zeros(20)
            apply(prompt, output[:t], logits)
            want = bool(thinking_stop.thinking_rows(torch.tensor([[0, *prompt, *output[:t]]]), start, end)[0])
            assert (logits[end] == 1.5) == want


def test_alpha_shifts_log_odds_of_end_only_while_thinking(lab_tokenizer):
    start, end = thinking_stop.marker_ids(lab_tokenizer)
    proc = thinking_stop.ThinkingStopProcessor(2.0, start, end)
    ids = torch.tensor([[start, 7, 8], [start, 7, end], [7, 8, 9]])
    scores = torch.randn(3, lab_tokenizer.vocab_size if hasattr(lab_tokenizer, "vocab_size") else 64)
    before = scores.clone()
    after = proc(ids, scores.clone())
    odds = lambda s: torch.softmax(s, -1)[end] / (1 - torch.softmax(s, -1)[end])  # noqa: E731
    assert torch.isclose(odds(after[0]) / odds(before[0]), torch.tensor(2.0).exp(), rtol=1e-4)
    assert torch.equal(after[1:], before[1:])  # closed thinking / never opened: untouched


def test_thinking_stop_refuses_bad_alpha():
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        thinking_stop.METHOD.vllm_logits({"alpha": -1}, None)


@needs_lab
def test_thinking_tokens_fall_monotonically_as_alpha_rises():
    from effreason.format import render_prompt
    from effreason.lab.datasets import lab_dataset
    from effreason.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(str(LAB_MODEL_DIR), device="cpu")
    prompts = [render_prompt(tok, row["prompt"])[1] for row in lab_dataset("test", limit=24)]
    end = thinking_stop.marker_ids(tok)[1]
    backend = HFBackend(model, tok, Sampling(), batch_size=32)
    per_alpha = []
    for alpha in (0.0, 1.0, 2.0, 4.0, 8.0):
        backend.configure({"thinking_stop": {"alpha": alpha}}, Sampling())
        gens = [g for (g,) in backend.generate(prompts, n=1, max_new_tokens=256, seeds=[0] * len(prompts))]
        per_alpha.append([g.token_ids.index(end) if end in g.token_ids else g.num_tokens for g in gens])
    means = [sum(t) / len(t) for t in per_alpha]
    for low, high in zip(per_alpha, per_alpha[1:], strict=False):  # greedy: every prompt's thinking can only get shorter
        assert all(b <= a for a, b in zip(low, high, strict=True))
    assert means[-1] < 0.8 * means[0], means
    backend.configure({}, Sampling())
    plain = [g for (g,) in backend.generate(prompts, n=1, max_new_tokens=256, seeds=[0] * len(prompts))]
    assert [g.token_ids.index(end) if end in g.token_ids else g.num_tokens for g in plain] == per_alpha[0]


# --- s1 with a minimum ("Wait") ----------------------------------------------------------------------

class ScriptedBackend:
    """Continues every prompt with the next scripted completion (as token ids); records the calls."""

    def __init__(self, tok, script):
        self.tokenizer, self.script, self.calls = tok, list(script), []

    def generate(self, prompt_ids, *, n, max_new_tokens, seeds):
        assert n == 1
        out = []
        for p in prompt_ids:
            text = self.script.pop(0)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][:max_new_tokens]
            self.calls.append((list(p), max_new_tokens))
            out.append([Generation(self.tokenizer.decode(ids), len(ids), text.endswith("}"), ids)])
        return out


def run_s1(tok, script, **settings):
    backend = ScriptedBackend(tok, script)
    sample = s1.METHOD.sampler(backend, {"answer_prefix": " the answer is \\boxed{", **settings})
    [[(gen, info, new)]] = sample([ids_of(tok, "1 + 2")], 1, 200, [0])
    return gen, info["s1"], new, backend


def test_s1_waits_below_the_minimum_and_counts_every_round_against_the_budget(lab_tokenizer):
    tok = lab_tokenizer
    script = ["<think> 1 2 </think> the answer is \\boxed{ 3 }", "3 4 5 </think> the answer is \\boxed{ 5 }"]
    gen, info, new, backend = run_s1(tok, list(script), thinking_budget=12, min_thinking_tokens=5, wait_text="wait")
    assert tok.decode(gen.token_ids) == "<think> 1 2 wait 3 4 5 </think> the answer is \\boxed{ 5 }"
    assert info == {"thinking_budget": 12, "thinking_tokens": 7, "waits": 1, "forced": False}
    assert backend.calls[1][0][-4:] == ids_of(tok, "<think> 1 2 wait")  # </think> dropped, Wait appended
    assert backend.calls[1][1] <= 12 - 4 + 1 + 32  # the second round gets only what is left of the budget
    assert new == len(ids_of(tok, script[0])) + len(ids_of(tok, script[1]))  # both rounds' generated tokens


def test_s1_forces_at_the_budget_when_a_wait_round_runs_long(lab_tokenizer):
    tok = lab_tokenizer
    gen, info, _, _ = run_s1(
        tok, ["<think> 1 </think> the answer is \\boxed{ 3 }", "2 3 4 5 6 7 8 9 10 11 12", "7 }"],
        thinking_budget=8, min_thinking_tokens=4, wait_text="wait")
    text = tok.decode(gen.token_ids)
    assert text == "<think> 1 wait 2 3 4 5 6 </think> the answer is \\boxed{ 7 }"  # <think> is thinking too
    assert info["thinking_tokens"] == 8 and info["forced"] and info["waits"] == 1


def test_s1_keeps_a_completion_that_thinks_enough_within_budget(lab_tokenizer):
    gen, info, _, backend = run_s1(lab_tokenizer, ["<think> 1 2 3 </think> the answer is \\boxed{ 3 }"],
                                   thinking_budget=16, min_thinking_tokens=2)
    assert info == {"thinking_budget": 16, "thinking_tokens": 4, "waits": 0, "forced": False}
    assert len(backend.calls) == 1 and backend.calls[0][1] == 16 + 1 + 32


def test_s1_settings_are_checked_before_loading():
    with pytest.raises(ValueError, match="min_thinking_tokens .* exceeds thinking_budget"):
        EvalConfig(output="x", benchmark="lab", model="lab", methods={"s1": {"thinking_budget": 8,
                                                                             "min_thinking_tokens": 9}})
    with pytest.raises(ValueError, match="thinking_budget must be an integer >= 1"):
        EvalConfig(output="x", benchmark="lab", model="lab", methods={"s1": {"thinking_budget": "8"}})
    with pytest.raises(ValueError, match="s1 thinking budget 200 exceeds --max-new-tokens 100"):
        EvalConfig(output="x", benchmark="lab", model="lab", max_new_tokens=100,
                   methods={"s1": {"thinking_budget": 200}})
    with pytest.raises(ValueError, match="each draw the samples themselves"):
        EvalConfig(output="x", benchmark="lab", model="lab", samples=4, temperature=1.0,
                   methods={"s1": {"thinking_budget": 8}, "first_finish": {}})


# --- short-m@k ----------------------------------------------------------------------------------------

def gen_of(tok, text, finished=True):
    ids = ids_of(tok, text)
    return Generation(text, len(ids), finished, ids)


def test_select_counts_the_first_m_by_thinking_end_and_stops_the_rest_at_t(lab_tokenizer):
    tok = lab_tokenizer
    end = thinking_stop.marker_ids(tok)[1]
    gens = [gen_of(tok, "<think> 1 2 3 4 5 </think> x"), gen_of(tok, "<think> 1 </think> y"),
            gen_of(tok, "<think> 1 2 3 </think> z"), gen_of(tok, "<think> 1 2 3 </think> w"),
            gen_of(tok, "<think> 1 2 3 4 5 6 7 8", finished=False)]
    out = parallel.select(gens, 2, end, tok)
    assert [info["counted"] for _, info in out] == [False, True, True, False, False]  # ties by sample index
    stopped = [info["stopped_at"] for _, info in out]
    assert stopped == [5, None, None, 5, 5]  # T = the 2nd smallest thinking end = 5 tokens
    assert [g.num_tokens for g, _ in out] == [5, 4, 6, 5, 5]  # the counted keep their answers
    assert all(not g.finished for g, info in out if info["stopped_at"])
    assert out[3][1]["thinking_end"] == 5  # finished in the step it was stopped: counted out by the tie rule
    assert parallel.select(gens[4:], 1, end, tok)[0][1] == {"k": 1, "m": 1, "counted": False, "thinking_end": None,
                                                           "stopped_at": None}  # nobody finished: nothing stops


def test_short_m_needs_enough_samples():
    with pytest.raises(ValueError, match="set --samples K with K >= 3"):
        EvalConfig(output="x", benchmark="lab", model="lab", samples=2, temperature=1.0,
                   methods={"short_m_at_k": {"m": 3}})
    with pytest.raises(ValueError, match="K >= 2"):
        EvalConfig(output="x", benchmark="lab", model="lab", methods={"first_finish": {}})


@needs_lab
def test_real_short_m_run_equals_the_replay_of_complete_samples(tmp_path):
    """HF stops rows for real; the figures equal those the leaderboard derives from the k complete samples."""
    common = dict(benchmark="lab", model="lab", limit=12, samples=4, temperature=0.7, seed=3, progress=False)
    full = run_eval(EvalConfig(output=str(tmp_path / "maj"), **common))
    real = run_eval(EvalConfig(output=str(tmp_path / "sm"), methods={"short_m_at_k": {"m": 2}}, **common))
    ff = run_eval(EvalConfig(output=str(tmp_path / "ff"), methods={"first_finish": {}}, **common))
    rows = {(r["id"], r["sample"]): r for r in map(json.loads, (tmp_path / "maj/samples.jsonl").open())}
    for line in (tmp_path / "sm/samples.jsonl").open():
        r = json.loads(line)
        info, whole = r["method_info"]["short_m_at_k"], rows[(r["id"], r["sample"])]
        if info["stopped_at"]:  # a stopped sample is a prefix of the complete one, cut at T
            assert r["tokens"] == info["stopped_at"] < whole["tokens"] and r["truncated"]
            assert whole["completion"].startswith(r["completion"])
        else:
            assert r["completion"] == whole["completion"]
    args = SimpleNamespace(model="lab", k=4, short_m=[2])
    replayed = {(row["method"], row["setting"]): row
                for row in leaderboard.replayed(args, tmp_path / "maj")}
    for name, results, key in (("short_m_at_k", real, 2), ("first_finish", ff, 4)):
        want = replayed[(name, key)]
        par = results["parallel"]
        assert (par["accuracy"], par["latency_tokens_mean"], par["compute_tokens_mean"]) == pytest.approx(
            (want["accuracy"], want["latency_tokens_mean"], want["compute_tokens_mean"]))
        assert par["compute_tokens_mean"] < full["parallel"]["compute_tokens_mean"]  # the stop saved compute
        assert results["accuracy"] == par["accuracy"]


@needs_lab
def test_leaderboard_writes_every_method_and_resumes(tmp_path, capsys):
    from effreason.cli import main

    out = tmp_path / "lb"
    argv = ["eval", "leaderboard", "--model", "lab", "--benchmark", "lab", "--limit", "6", "--output", str(out),
            "--s1-budgets", "40,96", "--alphas", "2", "-k", "4", "--short-m", "2", "--no-progress"]
    assert main(argv) == 0
    rows = json.loads((out / "leaderboard.json").read_text())
    methods = {r["method"] for r in rows}
    assert methods == {"base", "s1", "thinking_stop", "majority", "short_m_at_k", "first_finish"}
    for r in rows:
        assert {"method", "setting", "accuracy", "tokens_mean"} <= set(r)
        if r["method"] in leaderboard.PARALLEL:
            assert r["latency_tokens_mean"] <= r["compute_tokens_mean"] == r["tokens_mean"]
    assert (out / "leaderboard.png").stat().st_size > 0 and "| s1 | 40 |" in (out / "leaderboard.md").read_text()
    before = {p: p.read_bytes() for p in (out / "runs").glob("*/samples.jsonl")}
    assert main(argv) == 0  # the same command again: every point is read back, nothing regenerated
    assert {p: p.read_bytes() for p in (out / "runs").glob("*/samples.jsonl")} == before
    assert all(json.loads((p.parent / "results.json").read_text())["resumed_rows"] > 0 for p in before)
    assert json.loads((out / "leaderboard.json").read_text()) == rows
    # an entry joins the same leaderboard; a different --limit is another leaderboard and is refused
    assert main([*argv, "--entry", f"greedy={out / 'runs' / 'base'}"]) == 0
    assert [r for r in json.loads((out / "leaderboard.json").read_text()) if r["method"] == "greedy"]
    capsys.readouterr()
    assert main([a if a != "6" else "5" for a in argv]) == 2
    assert "limit" in capsys.readouterr().err


def test_recipes_set_the_methods_from_yaml_and_are_checked_at_start_up():
    from effreason.evaluation.posttrain import EvalArguments, eval_config

    with pytest.raises(ValueError, match="K >= 3"):
        EvalArguments(eval_methods={"short_m_at_k": {"m": 3}})  # k = eval_samples is 1: refused before training
    with pytest.raises(ValueError, match="did you mean 'thinking_stop'"):
        EvalArguments(eval_methods={"thinking_stp": {"alpha": 2.0}})
    args = EvalArguments(eval_methods={"short_m_at_k": {"m": 3}}, eval_samples=8, eval_temperature=0.7)
    cfg = eval_config(args, "out", "stage1", "lab")
    assert (cfg.samples, cfg.temperature, cfg.methods) == (8, 0.7, {"short_m_at_k": {"m": 3}})
    assert eval_config(EvalArguments(), "out", "stage1", "lab").samples == 1
