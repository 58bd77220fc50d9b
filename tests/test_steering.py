"""Steering vectors (issue 15): direction, closed-form strength, KL, injection, artifact, the eval method.

The direction and the derivatives are checked on a toy model whose states are known by hand; the
artifact, refusals and the eval method on the shipped lab model.
"""

from __future__ import annotations

import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from effreason.steering.pairs import Pair


class Add(nn.Module):
    def __init__(self, shift):
        super().__init__()
        self.shift = torch.tensor(shift)

    def forward(self, h):
        return h + self.shift


class Toy(nn.Module):
    """Embedding e_t = [t, 2t]; block 0 adds [1, 0]; block 1 doubles; logits = h @ W (no mixing across positions)."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(10, 2)
        with torch.no_grad():
            self.model.embed_tokens.weight.copy_(torch.tensor([[t, 2.0 * t] for t in range(10)]))
        self.model.layers = nn.ModuleList([Add([1.0, 0.0]), Scale()])
        self.config = SimpleNamespace(num_hidden_layers=2, hidden_size=2)
        self.W = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]])

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        h = self.model.embed_tokens(input_ids)
        for block in self.model.layers:
            h = block(h)
        return SimpleNamespace(logits=h @ self.W)


class Scale(nn.Module):
    def forward(self, h):
        return 2 * h


PAIRS = [Pair("a", (1,), (2, 3), (4, 5, 6)), Pair("b", (1,), (7,), (2,))]


def test_direction_by_hand():
    from effreason.steering.extract import directions

    # last token: pair a: c 3 vs v 6 -> e diff [-3, -6]; pair b: 7 vs 2 -> [5, 10]; mean [1, 2]
    v = directions(Toy(), PAIRS, [0, 1, 2], position="last")
    assert torch.allclose(v[0], torch.tensor([1.0, 2.0]))
    assert torch.allclose(v[1], torch.tensor([1.0, 2.0]))  # the shift cancels
    assert torch.allclose(v[2], torch.tensor([2.0, 4.0]))  # doubled after block 1
    # mean over the completion: a: mean(e2, e3) - mean(e4, e5, e6) = [-2.5, -5]; b: [5, 10]; mean [1.25, 2.5]
    v = directions(Toy(), PAIRS, [1], position="mean")
    assert torch.allclose(v[1], torch.tensor([1.25, 2.5]))
    with pytest.raises(ValueError, match="no pairs"):
        directions(Toy(), [], [1])
    with pytest.raises(ValueError, match="position rule"):
        directions(Toy(), PAIRS, [1], position="first")


def test_closed_form_by_hand():
    from effreason.steering.strength import closed_form_gamma, cubic_root

    # a = 1, L = 1, eps = 1/2: x^3 + x^2 - 2 = 0 -> x = 1; gamma_raw = 1; gamma = (1 - 1/4) * 1
    cf = closed_form_gamma(1.0, 1.0, 0.5)
    assert cf["x"] == pytest.approx(1.0) and cf["gamma_raw"] == pytest.approx(1.0) and cf["gamma"] == pytest.approx(0.75)
    # a = 2, L = 4, eps = 1/2: c = 4 * 0.5 * 16 / 16 = 2 -> x = 1; gamma_raw = 2/4; gamma = (1 - 4 * 0.5 / 8) * 0.5
    cf = closed_form_gamma(2.0, 4.0, 0.5)
    assert cf["gamma_raw"] == pytest.approx(0.5) and cf["gamma"] == pytest.approx(0.375)
    # no curvature: the limit 2 sqrt(eps) / a
    assert closed_form_gamma(4.0, 0.0, 0.01)["gamma"] == pytest.approx(0.05)
    for c in (1e-12, 1e-3, 0.5, 2.0, 12.0, 1e6):  # x = 2 is the root for c = 12
        x = cubic_root(c)
        assert x > 0 and x**3 + x**2 == pytest.approx(c, rel=1e-9)
    assert cubic_root(12.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="does not move the logits"):
        closed_form_gamma(0.0, 1.0, 1e-3)


def test_derivatives_and_kl_on_a_linear_model():
    from effreason.steering.strength import derivative_stats, kl_stats, kl_values

    toy, v = Toy(), torch.tensor([1.0, -1.0])
    seqs, starts = [[1, 2, 3, 4], [1, 5, 6]], [1, 0]
    # layer 2 (the output of block 1) feeds the logits linearly: Jv = v @ W at every position, no curvature
    d = derivative_stats(toy, seqs, starts, v, 2, step=0.01)
    assert d["a"] == pytest.approx(float((v @ toy.W).norm()), rel=1e-4)
    assert d["L"] == pytest.approx(0.0, abs=1e-2) and d["positions"] == 2 + 2  # positions start .. len - 2
    # at layer 1 the vector is doubled by block 1 on its way
    assert derivative_stats(toy, seqs, starts, v, 1, step=0.01)["a"] == pytest.approx(2 * d["a"], rel=1e-4)
    assert float(kl_values(toy, seqs, starts, v, 2, 0.0).abs().max()) == 0.0
    kl = kl_values(toy, seqs, starts, v, 2, 0.5)
    assert kl.shape == (4,) and bool((kl >= 0).all()) and float(kl.sum()) > 0
    z = torch.tensor([4.0, 4.0]) @ toy.W  # sequence 2, position 0: token 1 -> e = [1, 2] -> [2, 2] -> [4, 4]
    p, q = torch.log_softmax(z, -1), torch.log_softmax(z + 0.5 * v @ toy.W, -1)
    assert float(kl[2]) == pytest.approx(float((p.exp() * (p - q)).sum()), rel=1e-5)  # sequence 1's 2 positions first
    stats = kl_stats(kl)
    assert stats["median"] <= stats["p95"] <= stats["max"]


def test_search_finds_the_largest_gamma_within_the_bound():
    from effreason.steering.strength import search_gamma

    gamma, tried = search_gamma(lambda g: g * g, 0.25, 0.01, iterations=30)
    assert gamma == pytest.approx(0.5, rel=1e-3) and gamma * gamma <= 0.25
    gamma, _ = search_gamma(lambda g: g * g, 0.25, -3.0, iterations=30)  # too strong a start, negative side
    assert gamma == pytest.approx(-0.5, rel=1e-3)
    assert all("kl_p95" in t for t in tried)


def test_injection_positions():
    from effreason.steering.inject import steer

    toy, v = Toy(), torch.tensor([10.0, 0.0])
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    base = toy(ids).logits
    with steer(toy, v, 2, 1.0):  # a prefill: the last position only
        out = toy(ids).logits
    assert torch.equal(out[:, :2], base[:, :2]) and not torch.equal(out[:, 2], base[:, 2])
    with steer(toy, v, 2, 1.0):  # a decoding step: its one position
        step = toy(ids[:, :1]).logits
    assert torch.allclose(step[:, 0], base[:, 0] + v @ toy.W)
    with steer(toy, v, 2, 1.0, start=torch.tensor([1, 2])):  # teacher forcing: from each row's start
        forced = toy(ids).logits
    assert torch.equal(forced[0, 0], base[0, 0]) and torch.allclose(forced[0, 1:], base[0, 1:] + v @ toy.W)
    assert torch.equal(forced[1, :2], base[1, :2])
    assert torch.equal(toy(ids).logits, base)  # the hook is gone


# --- the artifact and the eval method, on the lab model ------------------------------------------------


@pytest.fixture(scope="module")
def lab():
    from effreason.models import load_model_and_tokenizer, resolve_model_path

    model, tok = load_model_and_tokenizer("lab", device="cpu")
    return model, tok, resolve_model_path("lab")


@pytest.fixture(scope="module")
def vector_dir(lab, tmp_path_factory):
    from effreason.steering.extract import directions
    from effreason.steering.pairs import lab_pairs
    from effreason.steering.vector import SteeringVector, model_record

    model, tok, path = lab
    v = directions(model, lab_pairs(tok, 32, 0), [3])[3]
    folder = tmp_path_factory.mktemp("vec") / "steering"
    SteeringVector(v, 3, 0.4, 1, "last", model_record("lab", path, tok, num_layers=3, hidden_size=128),
                   {"eps": 0.05, "kl": {"median": 0.0, "p95": 0.04}}).save(folder)
    return folder


def test_lab_pairs_are_one_check_apart(lab):
    from effreason.steering.pairs import lab_pairs

    _, tok, _ = lab
    pairs = lab_pairs(tok, 20, 0)
    assert len(pairs) == 20 and len({p.id for p in pairs}) == 20
    assert lab_pairs(tok, 20, 0) == pairs and lab_pairs(tok, 20, 1) != pairs  # deterministic for a seed
    for p in pairs:
        go_on, re_check = tok.decode(p.concise_ids), tok.decode(p.verbose_ids)
        assert go_on.startswith(re_check + " ")  # the concise member is the verbose one plus one check
        check = go_on[len(re_check):].strip()
        assert re.fullmatch(r"(wait , let me check|hmm , recompute) s\d+ : .* ;", check), check
        step = re.search(r"(s\d+) [^;:]* ;$", re_check)  # the verbose member ends right after that step
        assert step and check.split()[-1] == ";" and f" {step.group(1)} :" in check


def test_pairs_jsonl_errors_name_the_line(tmp_path, lab):
    from effreason.jsonl import DataError
    from effreason.steering.pairs import read_pairs_jsonl

    _, tok, _ = lab
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"problem": "start 1 ;", "concise": "<think> s1 </think>", "verbose": "<think> wait </think>"})
                 + "\n" + json.dumps({"problem": "start 2 ;", "concise": "x"}) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:2: field .verbose.: missing"):
        read_pairs_jsonl(str(f), tok)
    f.write_text(json.dumps({"problem": "p", "concise": "same", "verbose": "same"}) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:1.*must differ"):
        read_pairs_jsonl(str(f), tok)
    f.write_text(json.dumps({"problem": "start 1 ;", "concise": "<think> s1 </think>", "verbose": "<think> wait </think>"})
                 + "\n")
    [pair] = read_pairs_jsonl(str(f), tok)
    assert pair.id == "1" and pair.concise_ids == tuple(tok("<think> s1 </think>", add_special_tokens=False)["input_ids"])


def test_artifact_round_trip_and_refusals(vector_dir, lab, tmp_path):
    import shutil

    from effreason.steering.vector import SteeringError, SteeringVector

    model, tok, path = lab
    vec = SteeringVector.load(vector_dir)
    assert vec.layer == 3 and vec.gamma == 0.4 and vec.sign == 1 and vec.hidden_size == 128
    assert vec.info["eps"] == 0.05 and vec.info["kl"]["p95"] == 0.04
    vec.check_model(path, tok, depth=3, hidden_size=128)
    meta = json.loads((vector_dir / "steering.json").read_text())
    assert meta["model"]["tokenizer"] and meta["layer_convention"].startswith("effreason.hidden")
    # another model: other weights, another tokenizer, another width, an adapter
    other = tmp_path / "other"
    shutil.copytree(path, other)
    model_file = other / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(SteeringError, match="weights .* != "):
        vec.check_model(str(other), tok)
    with pytest.raises(SteeringError, match="hidden_size 128 != 64"):
        vec.check_model(None, None, hidden_size=64)
    from transformers import AutoTokenizer

    bpe = AutoTokenizer.from_pretrained(path)
    bpe.add_tokens(["steering-extra-token"])
    with pytest.raises(SteeringError, match="tokenizer"):
        vec.check_model(None, bpe)
    with pytest.raises(SteeringError, match="adapter"):
        vec.check_model(path, tok, adapter=str(other))
    # corrupt, missing, malformed
    bad = tmp_path / "bad"
    shutil.copytree(vector_dir, bad)
    (bad / "steering.safetensors").write_bytes((bad / "steering.safetensors").read_bytes()[:-4] + b"abcd")
    with pytest.raises(SteeringError, match="sha256 differs"):
        SteeringVector.load(bad)
    (bad / "steering.safetensors").unlink()
    with pytest.raises(SteeringError, match="steering.safetensors: missing"):
        SteeringVector.load(bad)
    shutil.copy(vector_dir / "steering.safetensors", bad)
    (bad / "steering.json").write_text("{half")
    with pytest.raises(SteeringError, match="not valid JSON"):
        SteeringVector.load(bad)
    meta_bad = {**meta, "layer": "three"}
    (bad / "steering.json").write_text(json.dumps(meta_bad))
    with pytest.raises(SteeringError, match="bad value for layer"):
        SteeringVector.load(bad)
    del meta_bad["layer"]
    (bad / "steering.json").write_text(json.dumps(meta_bad))
    with pytest.raises(SteeringError, match="missing key.*layer"):
        SteeringVector.load(bad)


def test_eval_with_steering_changes_generation_and_pins_the_vector(vector_dir, tmp_path):
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.runner import run_eval
    from effreason.evaluation.store import ConfigMismatchError

    common = dict(model="lab", benchmark="lab", limit=12, backend="hf", progress=False)
    base = run_eval(EvalConfig(output=str(tmp_path / "base"), **common))
    steered = run_eval(EvalConfig(output=str(tmp_path / "steered"), methods={"steering": {"vector": str(vector_dir)}},
                                  **common))
    assert steered["tokens_mean"] < 0.5 * base["tokens_mean"]  # the lab vector at gamma 0.4 cuts the checks
    saved = json.loads((tmp_path / "steered" / "results.json").read_text())
    settings = saved["config"]["methods"]["steering"]
    assert settings["gamma"] == 0.4 and len(settings["vector_sha256"]) == 64
    with pytest.raises(ConfigMismatchError, match="gamma"):
        run_eval(EvalConfig(output=str(tmp_path / "steered"), methods={"steering": {"vector": str(vector_dir),
                                                                                     "gamma": 0.5}}, **common))
    zero = run_eval(EvalConfig(output=str(tmp_path / "zero"), methods={"steering": {"vector": str(vector_dir),
                                                                                    "gamma": 0.0}}, **common))
    assert zero["tokens_mean"] == base["tokens_mean"] and zero["accuracy"] == base["accuracy"]


def test_eval_refuses_a_vector_for_another_model(vector_dir, tmp_path, benchmarks_dir):
    from test_shipped_configs import build_tiny_r1

    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.runner import run_eval
    from effreason.steering.vector import SteeringError

    tiny = build_tiny_r1(tmp_path / "tiny", benchmarks_dir)
    with pytest.raises(SteeringError, match="does not fit"):
        run_eval(EvalConfig(output=str(tmp_path / "out"), model=str(tiny), benchmark="lab", limit=2, backend="hf",
                            methods={"steering": {"vector": str(vector_dir)}}))
    assert not (tmp_path / "out" / "results.json").exists()


def test_cli_options_and_settings_checks(vector_dir, tmp_path):
    from effreason.evaluation.config import EvalConfig
    from effreason.generation.methods import check_backend
    from effreason.steering.method import METHOD

    assert METHOD.settings(SimpleNamespace(steering=None, gamma=None)) is None
    with pytest.raises(ValueError, match="--gamma is the steering strength"):
        METHOD.settings(SimpleNamespace(steering=None, gamma=0.5))
    assert METHOD.settings(SimpleNamespace(steering="D", gamma=-0.5)) == {"vector": "D", "gamma": -0.5}
    with pytest.raises(ValueError, match="has no setting 'gama'; did you mean 'gamma'"):
        EvalConfig(output=str(tmp_path / "o"), model="lab", benchmark="lab",
                   methods={"steering": {"vector": str(vector_dir), "gama": 1}})
    with pytest.raises(ValueError, match="finite number"):
        EvalConfig(output=str(tmp_path / "o"), model="lab", benchmark="lab",
                   methods={"steering": {"vector": str(vector_dir), "gamma": math.nan}})
    with pytest.raises(ValueError, match="missing"):
        EvalConfig(output=str(tmp_path / "o"), model="lab", benchmark="lab",
                   methods={"steering": {"vector": str(tmp_path / "nowhere")}})
    with pytest.raises(ValueError, match="methods steering and early_exit cannot run together"):
        EvalConfig(output=str(tmp_path / "o"), model="lab", benchmark="lab",
                   methods={"steering": {"vector": str(vector_dir)}, "early_exit": {"probe": "p", "delta": 0.05}})
    check_backend(["steering"], "hf")
    check_backend(["steering"], "vllm")  # through the out-of-tree model


def test_steer_bench_and_leaderboard_points(vector_dir, tmp_path):
    import argparse

    from effreason.cli import main
    from effreason.evaluation import leaderboard

    assert main(["eval", "steer-bench", "--model", "lab", "--steering", str(vector_dir), "--limit", "8",
                 "--fixed-tokens", "16", "--output", str(tmp_path / "bench.json")]) == 0
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert figures["gamma"] == 0.4 and figures["token_ratio"] < 1 and figures["plain_fixed_s"] > 0
    assert figures["steered_fixed_s"] > 0 and figures["cost"] > -1

    p = argparse.ArgumentParser()
    leaderboard.add_arguments(p)
    args = p.parse_args(["--model", "lab", "--benchmark", "lab", "--output", str(tmp_path / "lb"),
                         "--steering", str(vector_dir)])
    points = [(m, s) for m, s, _ in leaderboard.plan(args, 384) if m == "steering"]
    assert points == [("steering", 0.2), ("steering", 0.3), ("steering", 0.4)]  # 0.5, 0.75, 1 x the vector's gamma
    args = p.parse_args(["--model", "lab", "--benchmark", "lab", "--output", str(tmp_path / "lb"),
                         "--steering", str(vector_dir), "--steering-gammas=-1,0.5"])  # = : a leading minus
    assert [s for m, s, _ in leaderboard.plan(args, 384) if m == "steering"] == [-1.0, 0.5]


def test_serving_api_checks_the_model_and_steers(vector_dir, tmp_path, benchmarks_dir):
    from test_shipped_configs import build_tiny_r1

    from effreason.generation.hf import generate_hf
    from effreason.lab.datasets import lab_problems
    from effreason.steering.pairs import render
    from effreason.steering.serve import steered_hf
    from effreason.steering.vector import SteeringError

    model = steered_hf(vector_dir, "lab", device="cpu")
    prompts = [list(render(model.tokenizer, p.text())) for p in lab_problems("test")[:6]]
    steered = generate_hf(model, model.tokenizer, prompts, max_new_tokens=300)
    plain = generate_hf(model.steered_model, model.tokenizer, prompts, max_new_tokens=300)
    assert sum(g.num_tokens for g in steered) < sum(g.num_tokens for g in plain)
    with pytest.raises(SteeringError, match="does not fit"):
        steered_hf(vector_dir, str(build_tiny_r1(tmp_path / "tiny", benchmarks_dir)), device="cpu")
