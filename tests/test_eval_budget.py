"""Thinking/answer token splits and budget forcing (cut rule, forced text, the method's rows), on the lab tokenizer."""

import pytest

from effreason.benchmarks import BENCHMARKS
from effreason.generation import budget_forcing as budget
from effreason.generation import thinking
from effreason.generation.methods import Rollout, post_processors
from effreason.generation.types import Capability, Generation
from effreason.lab.tokenizer import build_lab_tokenizer

TRACE = "<think> s1 1 + 2 = 3 ; </think> the answer is \\boxed{ 3 }"  # 9 tokens through </think>, 6 after


@pytest.fixture(scope="module")
def tok():
    return build_lab_tokenizer()


def ids_of(tok, text, eos=True):
    return tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])


def test_think_end_by_id_and_by_decoding_agree(tok):
    ids = ids_of(tok, TRACE)
    end_id = thinking.single_token_id(tok, thinking.THINK_END)
    assert end_id is not None
    assert thinking.think_end_tokens(ids, tok, think_end_id=end_id) == 9
    assert thinking.think_end_tokens(ids, tok, think_end_id=None) == 9  # decode + binary search path
    twice = ids_of(tok, "<think> 1 </think> 2 </think> 3", eos=False)
    assert thinking.think_end_tokens(twice, tok, last=False, think_end_id=end_id) == 3
    assert thinking.think_end_tokens(twice, tok, last=True, think_end_id=end_id) == 5
    assert thinking.think_end_tokens(twice, tok, last=False) == 3
    assert thinking.think_end_tokens(twice, tok, last=True) == 5
    assert thinking.think_end_tokens(ids_of(tok, "<think> 1 2"), tok) is None


def test_split_token_counts(tok):
    ids = ids_of(tok, TRACE)  # 15 tokens + EOS
    assert thinking.split_token_counts(ids, len(ids), TRACE, tok) == (9, 7)  # the EOS counts as answer
    open_ids = ids_of(tok, "<think> s1 1 + 2", eos=False)
    assert thinking.split_token_counts(open_ids, 5, "<think> s1 1 + 2", tok) == (5, 0)  # truncated: all thinking
    plain = ids_of(tok, "the answer is 3", eos=False)
    assert thinking.split_token_counts(plain, 4, "the answer is 3", tok) == (0, 4)  # no markers: all answer


def test_split_text_token_counts(tok):
    assert thinking.split_text_token_counts(TRACE, tok) == (9, 6)
    assert thinking.split_text_token_counts("<think> 1 2 3", tok) == (4, 0)
    assert thinking.split_text_token_counts("the answer", tok) == (0, 2)


def test_budget_cut_rule(tok):
    ids = ids_of(tok, TRACE)
    n = len(ids)  # 16, thinking closes after 8 thinking tokens (+ the marker)
    end = thinking.think_end_tokens(ids, tok, last=False, think_end_id=5)
    assert budget.budget_cut(ids, n, True, 8, end) is None  # 8 thinking tokens fit a budget of 8
    assert budget.budget_cut(ids, n, True, 7, end) == ids[:7]
    truncated = ids_of(tok, "<think> 1 2 3 4 5 6", eos=False)
    assert budget.budget_cut(truncated, 7, False, 4, None) == truncated[:4]
    assert budget.budget_cut(truncated, 7, False, 7, None) == truncated  # cut at the limit: still forced
    short = ids_of(tok, "3")  # ended by itself within budget, no thinking markers
    assert budget.budget_cut(short, 2, True, 4, None) is None
    assert budget.budget_cut(short, 2, True, 1, None) == short[:1]
    with pytest.raises(ValueError):
        budget.budget_cut(ids, n, True, 0, end)


def test_forced_ids_and_default_prefix(tok):
    assert BENCHMARKS["lab"].answer_prefix == BENCHMARKS["lab_hard"].answer_prefix == " the answer is \\boxed{"
    assert BENCHMARKS["gsm8k"].answer_prefix == "\n\nThe final answer is \\boxed{"
    forced = budget.forced_ids(tok, BENCHMARKS["lab"].answer_prefix)
    assert tok.decode(forced) == "</think> the answer is \\boxed{"
    with pytest.raises(ValueError, match="answer-prefix"):  # the real-model prefix is not lab vocabulary
        budget.forced_ids(tok, BENCHMARKS["math500"].answer_prefix)


class ScriptedBackend:
    """Continues every prompt with the same ids and records each ``generate`` call."""

    name = "scripted"
    capabilities = frozenset({Capability.CONTINUE_FROM_IDS})

    def __init__(self, tokenizer, continuation):
        self.tokenizer, self.continuation, self.calls = tokenizer, continuation, []

    def generate(self, prompt_ids, *, n, max_new_tokens, seeds):
        self.calls.append((list(prompt_ids), n, max_new_tokens, list(seeds)))
        ids = self.continuation[:max_new_tokens]
        return [[Generation(self.tokenizer.decode(ids), len(ids), True, list(ids))] for _ in prompt_ids]


def test_budget_forcing_method_cuts_forces_continues_and_records(tok):
    eos = tok.eos_token_id
    backend = ScriptedBackend(tok, ids_of(tok, "3 }"))  # "3 }" + EOS
    settings = {"budgets": [4, 8], "answer_prefix": BENCHMARKS["lab"].answer_prefix, "budget_answer_tokens": 2}
    (step,) = post_processors(backend, {"budget_forcing": settings})
    ids = ids_of(tok, TRACE)  # closes its thinking after 8 thinking tokens
    base = Rollout([1, 2], Generation(TRACE, len(ids), True, ids), seed=10, origin="p0", new_tokens=len(ids))
    out = step([base])
    assert out[0] is base and [r.budget for r in out] == [None, 4, 8]
    fit, cut = out[2], out[1]
    assert not fit.forced and fit.gen is base.gen and fit.new_tokens == 0
    assert fit.info == {"budget_forcing": {"forced_at": None}}
    forced = budget.forced_ids(tok, settings["answer_prefix"])
    assert cut.forced and cut.info == {"budget_forcing": {"forced_at": 4}} and cut.origin == "p0"
    assert cut.gen.token_ids == ids[:4] + forced + ids_of(tok, "3 }", eos=False)  # 2 answer tokens allowed
    assert cut.gen.num_tokens == 4 + len(forced) + 2 and cut.new_tokens == 2
    assert cut.gen.text == "<think> s1 1 + </think> the answer is \\boxed{ 3 }"
    # one batched continuation: prompt + cut + forced text, seeded base seed + 7919 * budget
    assert backend.calls == [([[1, 2] + ids[:4] + forced], 1, 2, [10 + 7919 * 4])]
    assert eos not in cut.gen.token_ids
