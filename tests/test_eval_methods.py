"""The generation-method hook: a trivial method (ban one token) plugged into ``effreason eval``."""

import argparse

import pytest
import torch
from effreason.evaluation.backends import HFBackend, Sampling
from transformers import LogitsProcessor

from effreason.evaluation import methods
from effreason.evaluation.cli import add_parser, config_from_args
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
    backends = ("hf",)

    def add_arguments(self, parser):
        parser.add_argument("--ban-token", type=int, help="token id never to generate")

    def settings(self, args):
        return None if args.ban_token is None else {"token_id": args.ban_token}

    def apply(self, hooks, tokenizer, settings):
        return methods.GenerationHooks(hooks.model, [*hooks.logits_processors, BanToken(settings["token_id"])],
                                       hooks.stopping_criteria)


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
    with pytest.raises(ValueError, match="runs on backends"):
        config_from_args(args)


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
    with pytest.raises(TypeError):
        methods.register_method(object())
