"""LoRA reasoning adapters (issue 16): buckets, the router and its threshold, the artifacts and their refusals,
per-prompt adapters on HF, the eval method, the exact LoRA merge, the reward on thinking tokens, the lab splits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from effreason.adapters.buckets import Bucket, hindsight_bucket, parse_buckets
from effreason.adapters.router import Router, RouterError, choose_threshold, wilson_lower

BUCKETS = parse_buckets({"short": {"tokens": 64}, "long": {"tokens": 256}, "medium": {"tokens": 128}})


# --- buckets ---------------------------------------------------------------------------------------------


def test_buckets_sorted_with_default_instructions_and_hindsight_labels():
    assert [b.name for b in BUCKETS] == ["short", "medium", "long"]
    assert BUCKETS[0].instruction == "think for 64 tokens"
    assert hindsight_bucket(64, BUCKETS).name == "short"
    assert hindsight_bucket(65, BUCKETS).name == "medium"
    assert hindsight_bucket(257, BUCKETS) is None


@pytest.mark.parametrize(("spec", "message"), [
    ({"short": {"tokens": 0}}, "short.tokens must be a positive"),
    ({"short": {"tokens": 64, "budget": 3}}, "unknown keys \\['budget'\\]"),
    ({"a": {"tokens": 64}, "b": {"tokens": 64}}, "same number of tokens"),
    ({}, "must map each bucket"),
    ({"short": {"tokens": 64, "penalty": -1}}, "penalty must be a number >= 0"),
    ({"long": {"tokens": 64, "floor": 64}}, "long.floor must be a number of thinking tokens between 0 and 64"),
])
def test_bad_buckets_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_buckets(spec)


# --- router threshold --------------------------------------------------------------------------------


def test_wilson_lower_bound():
    assert wilson_lower(10, 10, 0.0) == 1.0
    assert wilson_lower(95, 100, 0.9) < 0.95 < wilson_lower(990, 1000, 0.9)
    assert wilson_lower(0, 0, 0.9) == 0.0


def test_threshold_is_the_lowest_whose_routed_accuracy_bound_meets_the_target():
    rng = np.random.default_rng(0)
    scores = rng.random(2000)
    correct = rng.random(2000) < scores ** 0.25  # higher score, more often right
    t, fig = choose_threshold(scores, correct, target_accuracy=0.95, confidence=0.9)
    routed = scores >= t
    assert routed.sum() == fig["routed_to_base"] > 0
    assert wilson_lower(int(correct[routed].sum()), int(routed.sum()), 0.9) >= 0.95
    lower = scores[scores < t].max()  # one more problem routed breaks the bound
    more = scores >= lower
    assert wilson_lower(int(correct[more].sum()), int(more.sum()), 0.9) < 0.95
    assert fig["recall"] == pytest.approx(correct[routed].sum() / correct.sum())


def test_threshold_is_infinite_when_no_set_is_accurate_enough():
    t, fig = choose_threshold(np.array([0.9, 0.8, 0.1]), np.array([False, True, False]), target_accuracy=0.95,
                              confidence=0.0)
    assert math.isinf(t) and fig["routed_to_base"] == 0 and fig["routed_accuracy"] is None


def test_threshold_never_cuts_between_equal_scores():
    t, fig = choose_threshold(np.array([0.9, 0.9, 0.5]), np.array([True, False, True]), target_accuracy=0.9,
                              confidence=0.0)
    assert math.isinf(t)  # the top score alone is right half the time; no cut splits the tie


# --- router artifact --------------------------------------------------------------------------------


def _router(model_record: dict) -> Router:
    from effreason.classifier import build_mlp

    torch.manual_seed(0)
    return Router(build_mlp(4, (8,)), torch.zeros(4), torch.ones(4), [1, 3], 0.7, 0.95, 0.9, model_record,
                  {"problems": 10}, {"recall": 0.9})


def test_router_round_trip_scores_and_routes(tmp_path):
    from effreason.adapters.router import HIDDEN

    router = _router({"name": "m"})
    router.mlp = __import__("effreason.classifier", fromlist=["build_mlp"]).build_mlp(4, HIDDEN)
    router.save(tmp_path / "r")
    back = Router.load(tmp_path / "r")
    x = torch.randn(5, 4)
    assert np.allclose(back.scores(x), router.scores(x))
    assert back.threshold == 0.7 and back.layers == [1, 3] and back.calibration == {"recall": 0.9}
    assert list(back.to_base(np.array([0.69, 0.7, 0.9]))) == [False, True, True]


def test_router_with_no_threshold_routes_nothing_to_the_base(tmp_path):
    from effreason.adapters.router import HIDDEN
    from effreason.classifier import build_mlp

    router = _router({})
    router.mlp, router.threshold = build_mlp(4, HIDDEN), math.inf
    router.save(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "router.json").read_text())
    assert meta["threshold"] is None
    assert not Router.load(tmp_path / "r").to_base(np.array([1.0])).any()


def test_damaged_router_folders_are_refused_naming_the_file(tmp_path):
    from effreason.adapters.router import HIDDEN
    from effreason.classifier import build_mlp

    router = _router({})
    router.mlp = build_mlp(4, HIDDEN)
    router.save(tmp_path / "r")
    (tmp_path / "r" / "router.safetensors").write_bytes(b"junk")
    with pytest.raises(RouterError, match="router.safetensors: its sha256 differs"):
        Router.load(tmp_path / "r")
    with pytest.raises(RouterError, match="missing"):
        Router.load(tmp_path / "nowhere")


def test_router_for_another_base_model_is_refused(tmp_path, untrained_lab_dir, lab_tokenizer):
    from effreason.artifacts import model_record
    from effreason.models import resolve_model_path

    router = _router(model_record("lab", resolve_model_path("lab"), lab_tokenizer, num_layers=3, hidden_size=128))
    router.check_model("lab", lab_tokenizer, depth=3, hidden_size=128)  # its own base: fine
    with pytest.raises(RouterError, match="does not fit .*weights"):
        router.check_model(str(untrained_lab_dir), lab_tokenizer, depth=3, hidden_size=128)
    with pytest.raises(RouterError, match="reads layer 3 .* the model has 2 layers"):
        router.check_model("lab", lab_tokenizer, depth=2)


# --- the adapter on HF: per-prompt routing, refusals, exact merge ---------------------------------------------


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, untrained_lab_dir):
    """A random (non-zero) LoRA adapter on the untrained lab model, with effreason's adapter file."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from effreason.adapters.adapter import write_adapter_info
    from effreason.artifacts import model_record
    from effreason.models import load_tokenizer

    path = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(untrained_lab_dir),
                           LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"],
                                      init_lora_weights=False))
    model.save_pretrained(path)
    write_adapter_info(path, base=model_record("base", str(untrained_lab_dir), load_tokenizer(untrained_lab_dir),
                                               num_layers=3, hidden_size=128),
                       buckets=BUCKETS, training={})
    return path


def test_per_prompt_adapters_on_hf_match_separate_runs(untrained_lab_dir, lora_dir, lab_tokenizer):
    from effreason.generation.backends import HFBackend, Sampling
    from effreason.models import load_model_and_tokenizer

    prompts = [lab_tokenizer(f"start {i} ; s1 + 3 ; ( mod 11 )")["input_ids"] for i in range(4)]
    peft, tok = load_model_and_tokenizer(str(untrained_lab_dir), adapter=str(lora_dir), merge_adapter=False)
    backend = HFBackend(peft, tok, Sampling(), batch_size=8)
    routed = backend.generate(prompts, n=1, max_new_tokens=6, seeds=[0] * 4, adapters=[True, False, True, False])
    merged, _ = load_model_and_tokenizer(str(untrained_lab_dir), adapter=str(lora_dir))
    base, _ = load_model_and_tokenizer(str(untrained_lab_dir))
    with_adapter = HFBackend(merged, tok, Sampling()).generate(prompts, n=1, max_new_tokens=6, seeds=[0] * 4)
    alone = HFBackend(base, tok, Sampling()).generate(prompts, n=1, max_new_tokens=6, seeds=[0] * 4)
    assert [g[0].token_ids for g in routed] == [with_adapter[0][0].token_ids, alone[1][0].token_ids,
                                                with_adapter[2][0].token_ids, alone[3][0].token_ids]
    assert with_adapter[0][0].token_ids != alone[0][0].token_ids  # the adapter changes something


def test_peft_merged_params_equal_a_merge_and_leave_the_base_untouched(untrained_lab_dir, lora_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from effreason.training.vllm_sync import peft_merged_params

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(untrained_lab_dir), str(lora_dir))
    before = {k: v.clone() for k, v in model.named_parameters()}
    exact = dict(peft_merged_params(model))
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in before.items())
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(untrained_lab_dir),
                                       str(lora_dir)).merge_and_unload().state_dict()
    assert set(exact) == {k for k in merged if k != "lm_head.weight"}
    assert all(torch.allclose(exact[k], merged[k], atol=1e-6) for k in exact)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(exact[q], before[f"base_model.model.{q.replace('.weight', '.base_layer.weight')}"])


def test_adapter_for_another_base_model_is_refused(lora_dir, lab_tokenizer):
    from effreason.adapters.adapter import AdapterError, check_adapter_base, load_adapter_buckets
    from effreason.models import resolve_model_path

    with pytest.raises(AdapterError, match="reasoning adapter was built for model 'base' and does not fit"):
        check_adapter_base(lora_dir, resolve_model_path("lab"), lab_tokenizer)
    assert [b.name for b in load_adapter_buckets(lora_dir)] == ["short", "medium", "long"]


def test_adapter_without_buckets_refuses_a_bucket(tmp_path):
    from effreason.adapters.adapter import AdapterError, load_adapter_buckets

    with pytest.raises(AdapterError, match="not trained with length buckets"):
        load_adapter_buckets(tmp_path)


def test_eval_refuses_a_bucket_without_an_adapter_and_an_unknown_bucket(tmp_path, untrained_lab_dir, lora_dir,
                                                                         capsys):
    from effreason.evaluation.cli import main

    assert main(["--model", str(untrained_lab_dir), "--benchmark", "lab", "--limit", "2", "--bucket", "short",
                 "--output", str(tmp_path / "a")]) == 2
    assert "give it with --adapter DIR" in capsys.readouterr().err
    assert main(["--model", str(untrained_lab_dir), "--adapter", str(lora_dir), "--benchmark", "lab", "--limit", "2",
                 "--bucket", "tiny", "--output", str(tmp_path / "b")]) == 2
    assert "no bucket 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bucketed_eval_records_the_route_and_appends_the_instruction(tmp_path, untrained_lab_dir, lora_dir):
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.runner import run_eval

    cfg = EvalConfig(model=str(untrained_lab_dir), adapter=str(lora_dir), benchmark="lab", limit=3,
                     max_new_tokens=4, output=str(tmp_path / "o"), progress=False,
                     methods={"adapter_router": {"bucket": "short"}})
    run_eval(cfg)
    rows = [json.loads(line) for line in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert [r["method_info"] for r in rows] == [{"route": "adapter", "bucket": "short"}] * 3
    assert all("think for 64 tokens" not in r["prompt"] for r in rows)  # the row keeps the problem's prompt


# --- reward on thinking tokens, routing figures, the lab splits ------------------------------------------


def test_tldr_reward_can_count_thinking_tokens_only():
    from effreason.rewards import TLDRLength

    reward = TLDRLength(budgets={"short": 4}, tokens="thinking", think_end_id=9, mode="exact")
    completions = ["<think> a </think> the answer is \\boxed{ 3 }"] * 2
    ids = [[1, 2, 3, 9, 5, 5, 5, 5, 5, 5], [1, 2, 3, 4, 5, 6, 7, 9, 5, 5]]
    r = reward([None, None], completions, ids, length_bucket=["short"] * 2, answer=["3", "3"],
               length_level=["short", "short"])
    assert r == [1.0, 1.0 - (8 - 4) / 4]
    with pytest.raises(ValueError, match="needs think_end_id"):
        TLDRLength(budgets={"short": 4}, tokens="thinking")


def test_bucket_reward_penalises_leaving_the_band_between_floor_and_tokens():
    from effreason.adapters.data import bucket_reward_spec
    from effreason.rewards.registry import build_reward

    buckets = parse_buckets({"short": {"tokens": 4}, "long": {"tokens": 8, "floor": 4, "penalty": 2.0}})
    reward = build_reward(bucket_reward_spec(buckets, think_end_id=9, mode="exact"))
    done = "<think> a </think> the answer is \\boxed{ 3 }"
    two, six, ten = [1, 9, 5], [1, 2, 3, 4, 5, 9, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 5]
    r = reward([None] * 4, [done] * 4, [two, two, six, ten], length_bucket=["short", "long", "long", "long"],
               answer=["3"] * 4)
    assert r == [1.0, 1.0 - 2.0 * (4 - 2) / 4, 1.0, 1.0 - 2.0 * (10 - 8) / 8]
    assert "floors" not in bucket_reward_spec(BUCKETS, think_end_id=9, mode="exact")


def test_routing_figures_join_routed_base_and_adapter_rows():
    from effreason.adapters.report import routing_figures

    def row(correct, tokens, route=None):
        return {"correct": correct, "tokens": tokens, **({"method_info": {"route": route, "router_s": 0.5}}
                                                         if route else {})}

    base = {"a": row(True, 7), "b": row(True, 7), "c": row(False, 7)}
    adapter = {"a": row(True, 50), "b": row(True, 60), "c": row(True, 90)}
    routed = {"a": row(True, 7, "base"), "b": row(True, 60, "adapter"), "c": row(True, 90, "adapter")}
    fig = routing_figures(routed, base, adapter, generation_s=10.0)
    assert fig["recall"] == 0.5 and fig["routed_to_base_accuracy"] == 1.0
    assert fig["tokens_saved_share"] == pytest.approx(1 - 157 / 200)
    assert fig["tokens_saved_ceiling_share"] == pytest.approx((43 + 53) / 200)
    assert fig["router_share_of_generation"] == pytest.approx(0.15)


def test_lab_mixed_splits_are_disjoint_one_to_eight_steps():
    from effreason.benchmarks import BENCHMARKS, load_benchmark
    from effreason.lab.datasets import HELD_OUT, lab_problems

    mixed, cal, train = (set(lab_problems(s)) for s in ("mixed", "mixed_cal", "mixed_train"))
    assert not mixed & cal and not mixed & train and not cal & train
    assert not mixed & set(lab_problems("train")) and not train & set(lab_problems("test"))
    assert {p.num_steps for p in mixed} == set(range(1, 9))
    assert "mixed_cal" in HELD_OUT and "mixed_train" not in HELD_OUT
    ds = load_benchmark("lab_mixed", split="test", limit=3)
    assert BENCHMARKS["lab_mixed"].grading_mode == "exact"
    assert set(ds.column_names) == set(load_benchmark("lab", split="test", limit=1).column_names)


def test_lab_base_answers_without_thinking():
    from effreason.format import chat_prompt, chat_prompt_ids
    from effreason.generation.hf import generate_hf
    from effreason.lab.datasets import lab_problems
    from effreason.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer("lab_base")
    problems = [p for p in lab_problems("mixed") if p.num_steps == 1][:20]
    gens = generate_hf(model, tok, [chat_prompt_ids(tok, chat_prompt(p.text())) for p in problems],
                       max_new_tokens=16, batch_size=20)
    assert all(g.text.startswith("the answer is \\boxed{") and "<think>" not in g.text for g in gens)
    assert sum(g.text == f"the answer is \\boxed{{ {p.answer} }}" for g, p in zip(gens, problems, strict=True)) >= 18


def test_bucket_class_is_frozen():
    with pytest.raises(AttributeError):
        Bucket("a", 1, "x").tokens = 2  # type: ignore[misc]


def test_adapter_file_names_its_base(lora_dir):
    info = json.loads((Path(lora_dir) / "effreason_adapter.json").read_text())
    assert info["format"] == "effreason-reasoning-adapter" and info["base"]["name"] == "base"


def test_python_api_routes_with_the_bucket_instruction(untrained_lab_dir, lora_dir, lab_tokenizer):
    from effreason.adapters.serve import RoutedModel
    from effreason.format import chat_prompt, render_prompt
    from effreason.generation.backends import HFBackend, Sampling
    from effreason.models import load_model_and_tokenizer

    messages = [chat_prompt(f"start {i} ; s1 + 3 ; ( mod 11 )") for i in range(3)]
    with RoutedModel(str(untrained_lab_dir), str(lora_dir), bucket="short") as rm:
        out = rm.generate(messages, max_new_tokens=6)
    assert [o.route for o in out] == ["adapter"] * 3 and all(o.info["bucket"] == "short" for o in out)
    merged, tok = load_model_and_tokenizer(str(untrained_lab_dir), adapter=str(lora_dir))
    ids = [render_prompt(tok, chat_prompt(m[0]["content"], instruction="think for 64 tokens"))[1] for m in messages]
    want = HFBackend(merged, tok, Sampling()).generate(ids, n=1, max_new_tokens=6, seeds=[0] * 3)
    assert [o.token_ids for o in out] == [g[0].token_ids for g in want]
