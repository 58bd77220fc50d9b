"""Early-exit probes (issue 14): cue events, conformal calibration, the probe artifact, online exit on HF."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from effreason.early_exit.conformal import Thresholds, calibrate, class_threshold, conformal_rank, exit_mask
from effreason.early_exit.cues import CueMatcher
from effreason.early_exit.probe import ExitProbe, ProbeError, build_mlp, model_fingerprint
from effreason.format import THINK_END
from effreason.generation.thinking import single_token_id
from effreason.outputs import tokenizer_fingerprint

# --- cues ------------------------------------------------------------------------------------------------


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_lab_cues_are_whole_words_in_the_thinking_only(lab_tokenizer):
    tok = lab_tokenizer
    m = CueMatcher(tok, end_id=single_token_id(tok, THINK_END))
    ids = _ids(tok, "<think> s1 4 + 2 = 6 ; wait , let me check s1 : 4 + 2 = 6 . yes ; hmm , recompute </think> "
                    "wait the answer is")
    events = m.events(ids)
    assert [e.cue for e in events] == ["wait", "hmm"]  # the "wait" after </think> is not an event
    assert [tok.decode([ids[e.token]]) for e in events] == ["wait", "hmm"]


def test_word_boundaries_case_and_phrases_with_a_plain_tokenizer(lab_tokenizer):
    from effreason.early_exit.cues import cue_pattern

    p = cue_pattern(["wait", "hmm", "alternatively", "let me double check"])
    text = "I await. Waiting... Wait, (hmm) hmmm alternatively-x ALTERNATIVELY let  me\ndouble check _wait wait2"
    assert [m.group(0) for m in p.finditer(text)] == ["Wait", "hmm", "alternatively", "ALTERNATIVELY",
                                                       "let  me\ndouble check"]


def test_incremental_scanner_finds_the_offline_events(lab_tokenizer):
    tok = lab_tokenizer
    m = CueMatcher(tok, end_id=single_token_id(tok, THINK_END))
    ids = _ids(tok, "<think> wait , hmm ; alternatively wait wait </think> hmm")
    scanner, online = m.scanner(), []
    for t in ids[: m.thinking_tokens(ids)]:
        online += scanner.push(t)
    online += scanner.finish()
    assert online == m.events(ids)
    assert len(online) == 5


class PieceTokenizer:
    """A tokenizer whose ids are fixed text pieces (to place cues inside and across tokens at will)."""

    pieces = {1: "a", 2: " wait hm", 3: "m", 4: " x", 5: "</think>"}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1] if text == "a" else []}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids)


def test_one_event_per_token_even_when_its_second_cue_is_confirmed_later():
    m = CueMatcher(PieceTokenizer(), end_id=5)
    events = m.events([1, 2, 3, 4, 5, 2, 4])  # "a wait hmm x</think> wait hm x": both cues start in token 1
    assert [(e.token, e.cue) for e in events] == [(1, "wait")]
    with pytest.raises(ValueError, match="one token"):
        CueMatcher(PieceTokenizer(), end_id=None).require_end_id()


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory, benchmarks_dir):
    from test_shipped_configs import build_tiny_r1

    from effreason.models import load_tokenizer

    path = build_tiny_r1(tmp_path_factory.mktemp("tiny_r1"), benchmarks_dir)
    return load_tokenizer(str(path))


def test_bpe_cues_map_to_the_token_they_start_in(bpe_tokenizer):
    tok = bpe_tokenizer
    m = CueMatcher(tok, end_id=single_token_id(tok, THINK_END))
    text = "Let me await the sum. Waiting is fine.\n\nWait, 7 * 13 = 91.\nHmm, alternatively pair them.</think> Wait"
    ids = _ids(tok, text)
    events = m.events(ids)
    assert [e.cue for e in events] == ["Wait", "Hmm", "alternatively"]
    pieces = [m.piece(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=False)
    starts = np.cumsum([0] + [len(x) for x in pieces])
    for e in events:  # the event's token holds the cue's first character
        assert starts[e.token] <= e.char < starts[e.token + 1]
        assert "".join(pieces)[e.char : e.char + len(e.cue)] == e.cue


# --- conformal --------------------------------------------------------------------------------------------


def test_conformal_rank_and_infinite_threshold():
    assert conformal_rank(19, 0.05) == 19  # (19 + 1) * 0.95 = 19 exactly, not 20 by float error
    assert conformal_rank(18, 0.05) == 19
    assert class_threshold(np.arange(18) / 18, 0.05) == math.inf  # rank 19 > 18 scores: never exclude
    assert class_threshold(np.arange(19) / 19, 0.05) == 18 / 19
    t = calibrate(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0]), [0.2])[0]
    assert t.n0 == 1 and t.n1 == 2 and t.q0 == math.inf
    assert not exit_mask(np.array([0.99]), t)[0]  # q0 infinite: class 0 always in the set, never exit


def test_conformal_class0_coverage_on_synthetic_scores():
    """Over many calibration/test draws, the exit rate at wrong (class-0) events stays <= delta + slack."""
    rng = np.random.default_rng(0)
    n0, n1, draws = 60, 40, 400
    for delta in (0.05, 0.1, 0.2):
        excluded, exits = [], []
        for _ in range(draws):
            p_cal = np.concatenate([rng.beta(2, 5, n0), rng.beta(5, 2, n1)])
            t = calibrate(p_cal, np.array([0] * n0 + [1] * n1), [delta])[0]
            p_test0 = rng.beta(2, 5, 2000)
            excluded.append(float((p_test0 > t.q0).mean()))  # class 0 left out of the set
            exits.append(float(exit_mask(p_test0, t).mean()))  # the set is {1}: a subset of those
        slack = 3 * math.sqrt(delta * (1 - delta) / (draws * 2000)) + 1e-3
        assert np.mean(exits) <= np.mean(excluded) <= delta + slack, delta
        # and not vacuous: class 0 is left out nearly delta of the time (exactly delta - at most 1/(n0+1) in theory)
        assert np.mean(excluded) >= delta - 1 / (n0 + 1) - slack, (delta, np.mean(excluded))


def test_a_clipped_threshold_would_break_the_bound():
    """The reference clips the rank to n; with few class-0 events that exits far too often."""
    rng = np.random.default_rng(1)
    delta, rates_ours, rates_clipped = 0.05, [], []
    for _ in range(300):
        s0 = rng.uniform(size=10)  # rank 11 > 10: ours is inf
        ours = class_threshold(s0, delta)
        clipped = float(np.sort(s0)[-1])
        test = rng.uniform(size=1000)
        rates_ours.append(float((test > ours).mean()))
        rates_clipped.append(float((test > clipped).mean()))
    assert np.mean(rates_ours) == 0.0
    assert np.mean(rates_clipped) > delta


# --- probe artifact ---------------------------------------------------------------------------------------


def constant_probe(tokenizer, model_path, depth, hidden, *, p: float, layers=(1, 2, 3), exit_string=None,
                   answer_tokens=8) -> ExitProbe:
    """A probe that outputs ``p`` everywhere; thresholds exit whenever ``p > 0.5``."""
    dim = hidden * len(layers)
    mlp = build_mlp(dim)
    with torch.no_grad():
        for param in mlp.parameters():
            param.zero_()
        mlp[-1].bias.fill_(math.log(p / (1 - p)))
    thresholds = [Thresholds(0.05, 0.5, 1.0, 100, 100), Thresholds(0.1, math.inf, 1.0, 5, 5)]
    return ExitProbe(mlp, torch.zeros(dim), torch.ones(dim), list(layers), ["wait", "hmm", "alternatively"],
                     exit_string or THINK_END + " the answer is \\boxed{", answer_tokens, thresholds,
                     model={"name": "lab", "path": model_path, "weights": model_fingerprint(model_path),
                            "tokenizer": tokenizer_fingerprint(tokenizer), "num_layers": depth, "hidden_size": hidden})


@pytest.fixture(scope="module")
def lab_model():
    from effreason.models import load_model_and_tokenizer, resolve_model_path

    path = resolve_model_path("lab")
    model, tok = load_model_and_tokenizer(path)
    return model, tok, path


def test_probe_round_trip_and_damaged_folders(lab_model, tmp_path):
    model, tok, path = lab_model
    probe = constant_probe(tok, path, 3, 128, p=0.9)
    probe.save(tmp_path / "probe")
    back = ExitProbe.load(tmp_path / "probe")
    x = torch.randn(4, 384)
    assert np.allclose(back.predict(x), probe.predict(x))
    assert back.threshold(0.1).q0 == math.inf and back.layers == [1, 2, 3]
    with pytest.raises(ProbeError, match="no calibration for delta 0.07"):
        back.threshold(0.07)
    back.check_model(path, tok, 3, 128)  # the model it was built on

    weights = tmp_path / "probe" / "probe.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ProbeError, match="sha256 differs"):
        ExitProbe.load(tmp_path / "probe")
    weights.unlink()
    with pytest.raises(ProbeError, match="probe.safetensors: missing"):
        ExitProbe.load(tmp_path / "probe")
    probe.save(tmp_path / "p2")
    meta = json.loads((tmp_path / "p2" / "probe.json").read_text())
    del meta["thresholds"]
    (tmp_path / "p2" / "probe.json").write_text(json.dumps(meta))
    with pytest.raises(ProbeError, match="missing key.*thresholds"):
        ExitProbe.load(tmp_path / "p2")


def test_a_probe_built_for_another_model_is_refused(lab_model, untrained_lab_dir, bpe_tokenizer):
    model, tok, path = lab_model
    probe = constant_probe(tok, path, 3, 128, p=0.9)
    with pytest.raises(ProbeError, match="built for model 'lab'.*weights"):
        probe.check_model(str(untrained_lab_dir), tok, 3, 128)
    with pytest.raises(ProbeError, match="tokenizer"):
        probe.check_model(path, bpe_tokenizer, 3, 128)
    with pytest.raises(ProbeError, match="num_layers 3 != 28"):
        probe.check_model(path, tok, 28, 128)
    with pytest.raises(ProbeError, match=r"reads layer 3 \(probe.json layers \[1, 2, 3\]\), and the model has 2 layers"):
        probe.check_model(path, tok, 2, 128)
    with pytest.raises(ProbeError, match="with adapter None, and the model now has adapter"):
        probe.check_model(path, tok, 3, 128, adapter=str(untrained_lab_dir))


# --- online exit on HF ------------------------------------------------------------------------------------


def _prompts(tok, n):
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.prompts import load_problems

    task = load_problems(EvalConfig(output="-", benchmark="lab", limit=n, model="lab"), tok)
    return task.problems


def test_online_exit_hf_never_exiting_gives_the_plain_completions(lab_model):
    from effreason.early_exit.online import generate_exit_hf
    from effreason.generation.hf import generate_hf

    model, tok, path = lab_model
    prompts = [p.prompt_ids for p in _prompts(tok, 6)]
    plain = generate_hf(model, tok, prompts, max_new_tokens=200, batch_size=4)
    outs = generate_exit_hf(model, tok, prompts, constant_probe(tok, path, 3, 128, p=0.1), 0.05,
                            max_new_tokens=200, batch_size=4)
    assert [o.gen.token_ids for o in outs] == [g.token_ids for g in plain]
    assert all(not o.info["early_exit"]["exited"] and o.info["early_exit"]["cues_seen"] > 0 for o in outs)


def test_online_exit_hf_cuts_at_the_first_cue_as_replay_does(lab_model):
    from effreason.early_exit.online import exit_ids, generate_exit_hf, replay_exit
    from effreason.generation.hf import generate_hf

    model, tok, path = lab_model
    probe = constant_probe(tok, path, 3, 128, p=0.9)
    prompts = [p.prompt_ids for p in _prompts(tok, 6)]
    plain = generate_hf(model, tok, prompts, max_new_tokens=200, batch_size=4)
    outs = generate_exit_hf(model, tok, prompts, probe, 0.05, max_new_tokens=200, batch_size=4)
    replay = replay_exit(model, tok, prompts, [g.token_ids for g in plain], probe, 0.05)
    forced = exit_ids(tok, probe.exit_string)
    for o, g, r in zip(outs, plain, replay, strict=True):
        info = o.info["early_exit"]
        assert info["exited"] and info["cue"] == "wait" and info["cues_seen"] == 1
        assert info["exit_token"] == r.exit.token  # the same event online and in replay
        cut = info["exit_token"]
        assert o.gen.token_ids[:cut] == g.token_ids[:cut]  # the thinking before the cue, as generated
        assert o.gen.token_ids[cut : cut + len(forced)] == forced
        assert "\\boxed{" in o.gen.text and o.gen.num_tokens < g.num_tokens
        assert info["discarded"] >= 1  # the token that confirmed the cue was generated, then dropped
        assert o.new_tokens == cut + info["discarded"] + (o.gen.num_tokens - cut - len(forced))
    # a probe that can exit only where q0 is finite: delta 0.1 has q0 = inf (too few calibration events)
    never = generate_exit_hf(model, tok, prompts[:2], probe, 0.1, max_new_tokens=200, batch_size=4)
    assert [o.gen.token_ids for o in never] == [g.token_ids for g in plain[:2]]


# --- the eval CLI: online exit, replay, refusals --------------------------------------------------------


def _eval(*args):
    from effreason.cli import main

    args = list(map(str, args))
    return main(["eval", *args] if args[0] == "exit-bench" else ["eval", *args, "--no-progress"])


def test_eval_cli_online_exit_and_replay(lab_model, tmp_path, capsys):
    from effreason.jsonl import read_jsonl

    model, tok, path = lab_model
    constant_probe(tok, path, 3, 128, p=0.9).save(tmp_path / "probe")
    assert _eval("--model", "lab", "--benchmark", "lab", "--limit", 6, "--output", tmp_path / "plain") == 0
    assert _eval("--model", "lab", "--benchmark", "lab", "--limit", 6, "--exit-probe", tmp_path / "probe",
                 "--delta", 0.05, "--output", tmp_path / "exit") == 0
    plain = read_jsonl(tmp_path / "plain" / "samples.jsonl")
    online = read_jsonl(tmp_path / "exit" / "samples.jsonl")
    assert all(r["method_info"]["early_exit"]["exited"] for r in online)
    results = json.loads((tmp_path / "exit" / "results.json").read_text())
    assert results["tokens_mean"] < json.loads((tmp_path / "plain" / "results.json").read_text())["tokens_mean"]
    assert results["config"]["methods"]["early_exit"]["probe_sha256"]  # a changed probe is a changed run
    assert results["early_exit"]["exit_rate"] == 1.0 and results["early_exit"]["discarded_tokens_mean"] >= 1
    assert "Early exit (delta 0.05)" in (tmp_path / "exit" / "summary.md").read_text()

    # replay on the plain completions (text only: tokenised once, whole) gives the online cut and answer
    assert _eval("--completions", tmp_path / "plain" / "samples.jsonl", "--exit-probe", tmp_path / "probe",
                 "--delta", 0.05, "--output", tmp_path / "replay") == 0
    replay = {r["id"]: r for r in read_jsonl(tmp_path / "replay" / "samples.jsonl")}
    for r in online:
        assert replay[r["id"]]["completion"] == r["completion"]
        assert replay[r["id"]]["method_info"]["early_exit"]["exit_token"] == r["method_info"]["early_exit"]["exit_token"]
    assert {r["id"] for r in plain} == set(replay)
    replayed = json.loads((tmp_path / "replay" / "results.json").read_text())
    assert replayed["early_exit"]["exit_rate"] == 1.0 and replayed["model"] == path
    # a resume with another delta names the setting that changed
    assert _eval("--model", "lab", "--benchmark", "lab", "--limit", 6, "--exit-probe", tmp_path / "probe",
                 "--delta", 0.1, "--output", tmp_path / "exit") == 2
    assert "methods.early_exit.delta: 0.05 -> 0.1" in capsys.readouterr().err


def test_eval_cli_refuses_bad_probe_settings(lab_model, untrained_lab_dir, tmp_path, capsys):
    model, tok, path = lab_model
    constant_probe(tok, path, 3, 128, p=0.9).save(tmp_path / "probe")
    assert _eval("--model", "lab", "--benchmark", "lab", "--limit", 2, "--exit-probe", tmp_path / "probe",
                 "--delta", 0.07, "--output", tmp_path / "a") == 2
    assert "no calibration for delta 0.07" in capsys.readouterr().err
    assert _eval("--model", "lab", "--benchmark", "lab", "--limit", 2, "--exit-probe", tmp_path / "nope",
                 "--delta", 0.05, "--output", tmp_path / "b") == 2
    assert "probe.json: missing" in capsys.readouterr().err
    assert _eval("--model", untrained_lab_dir, "--benchmark", "lab", "--limit", 2, "--exit-probe",
                 tmp_path / "probe", "--delta", 0.05, "--output", tmp_path / "c") == 2
    assert "built for model 'lab'" in capsys.readouterr().err
    assert _eval("--model", "lab", "--benchmark", "lab", "--limit", 2, "--delta", 0.05, "--output", tmp_path / "d") == 2
    assert "give the probe too" in capsys.readouterr().err


def test_exit_bench_and_leaderboard_points(lab_model, tmp_path):
    import argparse

    from effreason.evaluation import leaderboard

    model, tok, path = lab_model
    constant_probe(tok, path, 3, 128, p=0.9).save(tmp_path / "probe")
    assert _eval("exit-bench", "--model", "lab", "--limit", 8, "--exit-probe", tmp_path / "probe", "--delta", 0.05,
                 "--output", tmp_path / "bench.json") == 0
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["exits"] == 8 and figures["token_ratio"] < 0.8
    assert 0 < figures["probe_s"] < figures["exit_s"] and figures["plain_s"] > 0

    p = argparse.ArgumentParser()
    leaderboard.add_arguments(p)
    args = p.parse_args(["--model", "lab", "--benchmark", "lab", "--output", str(tmp_path / "lb"),
                         "--exit-probe", str(tmp_path / "probe")])
    points = [(m, s) for m, s, _ in leaderboard.plan(args, 384) if m == "early_exit"]
    assert points == [("early_exit", 0.05), ("early_exit", 0.1)]  # every calibrated delta by default
