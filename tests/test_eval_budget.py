"""Thinking/answer token splits and the budget-forcing cut rule, on the lab tokenizer."""

import pytest

from effreason.evaluation import budget
from effreason.lab.tokenizer import build_lab_tokenizer

TRACE = "<think> s1 1 + 2 = 3 ; </think> the answer is \\boxed{ 3 }"  # 9 tokens through </think>, 6 after


@pytest.fixture(scope="module")
def tok():
    return build_lab_tokenizer()


def ids_of(tok, text, eos=True):
    return tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])


def test_think_end_by_id_and_by_decoding_agree(tok):
    ids = ids_of(tok, TRACE)
    end_id = budget.single_token_id(tok, budget.THINK_END)
    assert end_id is not None
    assert budget.think_end_tokens(ids, tok, think_end_id=end_id) == 9
    assert budget.think_end_tokens(ids, tok, think_end_id=None) == 9  # decode + binary search path
    twice = ids_of(tok, "<think> 1 </think> 2 </think> 3", eos=False)
    assert budget.think_end_tokens(twice, tok, last=False, think_end_id=end_id) == 3
    assert budget.think_end_tokens(twice, tok, last=True, think_end_id=end_id) == 5
    assert budget.think_end_tokens(twice, tok, last=False) == 3
    assert budget.think_end_tokens(twice, tok, last=True) == 5
    assert budget.think_end_tokens(ids_of(tok, "<think> 1 2"), tok) is None


def test_split_token_counts(tok):
    ids = ids_of(tok, TRACE)  # 15 tokens + EOS
    assert budget.split_token_counts(ids, len(ids), TRACE, tok) == (9, 7)  # the EOS counts as answer
    open_ids = ids_of(tok, "<think> s1 1 + 2", eos=False)
    assert budget.split_token_counts(open_ids, 5, "<think> s1 1 + 2", tok) == (5, 0)  # truncated: all thinking
    plain = ids_of(tok, "the answer is 3", eos=False)
    assert budget.split_token_counts(plain, 4, "the answer is 3", tok) == (0, 4)  # no markers: all answer


def test_split_text_token_counts(tok):
    assert budget.split_text_token_counts(TRACE, tok) == (9, 6)
    assert budget.split_text_token_counts("<think> 1 2 3", tok) == (4, 0)
    assert budget.split_text_token_counts("the answer", tok) == (0, 2)


def test_budget_cut_rule(tok):
    ids = ids_of(tok, TRACE)
    n = len(ids)  # 16, thinking closes after 8 thinking tokens (+ the marker)
    end = budget.think_end_tokens(ids, tok, last=False, think_end_id=5)
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
    assert budget.default_answer_prefix("lab") == budget.default_answer_prefix("lab_hard")
    assert budget.default_answer_prefix("gsm8k") != budget.default_answer_prefix("lab")
    forced = budget.forced_ids(tok, budget.default_answer_prefix("lab"))
    assert tok.decode(forced) == "</think> the answer is \\boxed{"
    with pytest.raises(ValueError, match="answer-prefix"):  # the real-model prefix is not lab vocabulary
        budget.forced_ids(tok, budget.default_answer_prefix("math500"))
