"""The generation-method shape: a trivial method (ban one token) plugged into ``effreason eval``, capability
checks against each backend, and ``EvalConfig.methods`` validation."""

import argparse
from dataclasses import replace

import pytest
import torch
from transformers import LogitsProcessor

from effreason.evaluation.cli import add_parser, config_from_args
from effreason.evaluation.config import EvalConfig
from effreason.generation import methods
from effreason.generation.backends import BACKEND_CAPABILITIES, HFBackend, Sampling, build_backend
from effreason.generation.types import Capability
from effreason.lab.model import build_lab_model
from effreason.lab.tokenizer import build_lab_tokenizer


class BanToken(LogitsProcessor):
    def __init__(self, token_id: int):
        self.token_id = token_id

    def __call__(self, input_ids, scores):
        scores[:, self.token_id] = -float("inf")
        return scores


class BanMethod:
    """Never generate one given token: the simplest logits-processor method."""

    name = "ban"
    requires = frozenset({Capability.LOGITS_PROCESSORS})
    setting_names = frozenset({"token_id"})

    def add_arguments(self, parser):
        parser.add_argument("--ban-token", type=int, help="token id never to generate")

    def settings(self, args):
        return None if args.ban_token is None else {"token_id": args.ban_token}

    def apply(self, hooks, tokenizer, settings):
        return replace(hooks, logits_processors=[*hooks.logits_processors, BanToken(settings["token_id"])])


class SteerMethod:
    """Needs the residual stream, hidden states and an adapter per prompt: only HF declares all three."""

    name = "steer"
    requires = frozenset({Capability.RESIDUAL_HOOKS, Capability.HIDDEN_STATES, Capability.PER_PROMPT_ADAPTER})
    setting_names = frozenset({"vector"})

    def add_arguments(self, parser):
        pass

    def settings(self, args):
        return None

    def apply(self, hooks, tokenizer, settings):
        return hooks


@pytest.fixture
def ban_method():
    methods.register_method(BanMethod())
    yield
    methods.unregister_method("ban")


def parse(argv):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", *argv])


def test_method_options_reach_the_config(ban_method, tmp_path):
    args = parse(["--model", "m", "--benchmark", "lab", "--output", str(tmp_path), "--ban-token", "8"])
    assert config_from_args(args).methods == {"ban": {"token_id": 8}}
    args = parse(["--model", "m", "--benchmark", "lab", "--output", str(tmp_path)])
    assert config_from_args(args).methods == {}  # off unless asked for
    args = parse(["--model", "m", "--benchmark", "lab", "--output", str(tmp_path), "--ban-token", "8",
                  "--backend", "vllm"])
    with pytest.raises(ValueError, match="cannot run on backend 'vllm': .* no vllm_logits\\(\\).*use --backend hf"):
        config_from_args(args)


def test_refusal_names_the_missing_capability(ban_method, tmp_path):
    assert BACKEND_CAPABILITIES["hf"] >= {Capability.RESIDUAL_HOOKS, Capability.HIDDEN_STATES}
    assert Capability.HIDDEN_STATES not in BACKEND_CAPABILITIES["vllm"]
    assert Capability.RESIDUAL_HOOKS in BACKEND_CAPABILITIES["vllm"]  # through vllm_engine() (an out-of-tree model)
    # vLLM runs logits processors, but only ones written for its engine: the HF-only ban method is refused
    with pytest.raises(ValueError, match="has no vllm_logits\\(\\) for 'vllm'; use --backend hf"):
        EvalConfig(output=str(tmp_path), model="m", benchmark="lab", backend="vllm", methods={"ban": {"token_id": 3}})
    with pytest.raises(ValueError, match="no vllm_logits"):  # also when a backend is built directly
        build_backend("vllm", "m", sampling=Sampling(), methods={"ban": {"token_id": 3}})
    methods.register_method(SteerMethod())
    try:
        with pytest.raises(ValueError, match="'vllm': it needs hidden_states, which 'vllm' does "
                                             "not support; use --backend hf"):
            EvalConfig(output=str(tmp_path), model="m", benchmark="lab", backend="vllm",
                       methods={"steer": {"vector": "v"}})
        EvalConfig(output=str(tmp_path), model="m", benchmark="lab", methods={"steer": {"vector": "v"}})  # HF: fine
    finally:
        methods.unregister_method("steer")
    hf_only = SteerMethod()
    hf_only.requires = frozenset({Capability.RESIDUAL_HOOKS})  # residual hooks on HF only: no vllm_engine()
    methods.register_method(hf_only)
    try:
        with pytest.raises(ValueError, match="has no vllm_engine\\(\\) for 'vllm'; use --backend hf"):
            EvalConfig(output=str(tmp_path), model="m", benchmark="lab", backend="vllm",
                       methods={"steer": {"vector": "v"}})
    finally:
        methods.unregister_method("steer")
    cfg = EvalConfig(output=str(tmp_path), model="m", benchmark="lab", backend="vllm", budgets=[16])
    assert set(cfg.method_settings()) == {"budget_forcing"}  # budget forcing needs only continue_from_ids


def test_method_names_and_settings_are_checked_with_a_suggestion(ban_method, tmp_path):
    def config(**methods_):
        return EvalConfig(output=str(tmp_path), model="m", benchmark="lab", methods=methods_)

    with pytest.raises(ValueError, match="unknown generation method 'budget_forcng'; did you mean 'budget_forcing'"):
        config(budget_forcng={"budgets": [16]})
    with pytest.raises(ValueError, match="method 'ban' has no setting 'token'; did you mean 'token_id'"):
        config(ban={"token": 3})
    with pytest.raises(ValueError, match="unknown generation method 'zzz' \\(known: adapter_router, ban, budget_forcing, early_exit, "
                                         "first_finish, s1, short_m_at_k, steering, thinking_stop\\)"):
        config(zzz={})
    assert config(ban={"token_id": 3}).methods == {"ban": {"token_id": 3}}


def test_budget_forcing_from_recipe_methods_is_the_same_config(tmp_path):
    fields = EvalConfig(output=str(tmp_path), model="m", benchmark="lab", budgets=[32, 16], budget_answer_tokens=8)
    recipe = EvalConfig(output=str(tmp_path), model="m", benchmark="lab",
                        methods={"budget_forcing": {"budgets": [16, 32], "budget_answer_tokens": 8}})
    assert recipe.to_dict() == fields.to_dict() and recipe.methods == {} and recipe.budgets == [16, 32]
    with pytest.raises(ValueError, match="given twice"):
        EvalConfig(output=str(tmp_path), model="m", benchmark="lab", budgets=[8],
                   methods={"budget_forcing": {"budgets": [16]}})
    with pytest.raises(ValueError, match="exceeds --max-new-tokens 384"):  # the lab spec's cap, validated as ever
        EvalConfig(output=str(tmp_path), model="m", benchmark="lab", methods={"budget_forcing": {"budgets": [400]}})


def test_method_changes_generation(ban_method):
    tok = build_lab_tokenizer()
    model = build_lab_model(tok, seed=0).eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"start {i} ; s1 + 2 ; ( mod 11 )"}],
                                       add_generation_prompt=True, tokenize=False) for i in range(4)]
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    plain = HFBackend(model, tok, Sampling(), batch_size=4).generate(prompt_ids, n=1, max_new_tokens=12, seeds=[0] * 4)
    counts = torch.bincount(torch.tensor([t for (g,) in plain for t in g.token_ids]))
    banned = int(counts.argmax())  # the untrained model's favourite token
    hooked = HFBackend(model, tok, Sampling(), batch_size=4, methods={"ban": {"token_id": banned}})
    gens = hooked.generate(prompt_ids, n=1, max_new_tokens=12, seeds=[0] * 4)
    assert all(banned not in g.token_ids for (g,) in gens)
    assert [g.token_ids for (g,) in gens] != [g.token_ids for (g,) in plain]


def test_register_rejects_non_methods():
    with pytest.raises(TypeError, match="lacks"):
        methods.register_method(object())

    class Idle:  # the right attributes but nothing to do
        name, requires, setting_names = "idle", frozenset(), frozenset()

        def add_arguments(self, parser):
            pass

        def settings(self, args):
            return None

    with pytest.raises(TypeError, match="does nothing"):
        methods.register_method(Idle())
