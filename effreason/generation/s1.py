"""s1 budget forcing, the whole procedure (arXiv 2501.19393): a thinking budget, and "Wait" below a minimum.

A completion may think for at most ``thinking_budget`` tokens. At the budget its thinking is cut,
``</think>`` and the answer's lead-in are appended and the model writes the answer. When it ends its
thinking *before* ``min_thinking_tokens``, the ``</think>`` is dropped, ``wait_text`` ("Wait") is
appended and it thinks on, at most ``max_waits`` times. Every round counts against the budget: the
thinking tokens of all rounds and the "Wait" tokens together stay within ``thinking_budget`` (s1's own
evaluation code does not shrink its ``max_tokens`` across rounds, so its rounds can overrun; ours cannot).
The ``</think>`` marker itself is not counted, as in ``effreason.generation.budget_forcing``.

This method generates itself (a ``SamplerMethod``): the first round asks for at most
``thinking_budget + len(</think>) + answer_tokens`` tokens, so a tight budget also costs little compute;
a completion that closes its thinking in time writes its answer in that room. It runs on every
backend (it needs only ``CONTINUE_FROM_IDS``). ``--budgets`` (cut-and-force variants of one full
completion, ``effreason.generation.budget_forcing``) stays as it is; this is the procedure s1 describes.

Each row records ``{"s1": {"thinking_budget", "thinking_tokens", "waits", "forced"}}``.

    effreason eval --model lab --benchmark lab --s1-budget 64 --output runs/eval/s1-64
    effreason eval --model M --benchmark aime24 --s1-budget 4096 --s1-min-thinking 1024 --s1-max-waits 2 ...
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from effreason.format import THINK_END
from effreason.generation.budget_forcing import SEED_STRIDE, forced_ids
from effreason.generation.thinking import single_token_id
from effreason.generation.types import Capability, Generation

NAME = "s1"
DEFAULTS = {"min_thinking_tokens": 0, "wait_text": "Wait", "max_waits": 1, "answer_prefix": None, "answer_tokens": 32}


@dataclass
class _State:
    """One completion between rounds: all its generated (and inserted) ids are thinking until it is done."""

    prompt_ids: list[int]
    seed: int
    ids: list[int] = field(default_factory=list)
    waits: int = 0
    rounds: int = 0
    new_tokens: int = 0
    forced: bool = False
    done: Generation | None = None


def _settings(settings: dict) -> dict:
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    for key, low in (("thinking_budget", 1), ("min_thinking_tokens", 0), ("max_waits", 0), ("answer_tokens", 1)):
        value = s.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"s1 {key} must be an integer >= {low}, got {value!r}")
    if s["min_thinking_tokens"] > s["thinking_budget"]:
        raise ValueError(f"s1 min_thinking_tokens ({s['min_thinking_tokens']}) exceeds thinking_budget "
                         f"({s['thinking_budget']})")
    return s


class S1:
    """s1 budget forcing with a minimum ("Wait"): ``--s1-budget``, ``--s1-min-thinking``, ``--s1-max-waits``."""

    name = NAME
    requires = frozenset({Capability.CONTINUE_FROM_IDS})
    setting_names = frozenset({"thinking_budget", *DEFAULTS})

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--s1-budget", type=int, metavar="B",
                            help="s1: think at most B tokens (all rounds and Wait tokens counted), then force "
                                 "</think> + the answer prefix (--answer-prefix)")
        parser.add_argument("--s1-min-thinking", type=int, metavar="N",
                            help="s1: when thinking ends before N tokens, replace </think> with --s1-wait and go on")
        parser.add_argument("--s1-wait", metavar="TEXT", help="s1: the text that extends thinking (default: Wait)")
        parser.add_argument("--s1-max-waits", type=int, metavar="N", help="s1: extend at most N times (default 1)")
        parser.add_argument("--s1-answer-tokens", type=int, metavar="N",
                            help="s1: tokens allowed for the answer after </think> (default 32)")

    def settings(self, args: argparse.Namespace) -> dict | None:
        budget = getattr(args, "s1_budget", None)
        others = {"min_thinking_tokens": getattr(args, "s1_min_thinking", None),
                  "wait_text": getattr(args, "s1_wait", None), "max_waits": getattr(args, "s1_max_waits", None),
                  "answer_tokens": getattr(args, "s1_answer_tokens", None)}
        if budget is None:
            flags = {"min_thinking_tokens": "--s1-min-thinking", "wait_text": "--s1-wait",
                     "max_waits": "--s1-max-waits", "answer_tokens": "--s1-answer-tokens"}
            given = [flags[k] for k, v in others.items() if v is not None]
            if given:
                raise ValueError(f"{given[0]} is an s1 option: give the thinking budget too, --s1-budget B")
            return None
        return {"thinking_budget": budget, **{k: v for k, v in others.items() if v is not None},
                "answer_prefix": getattr(args, "answer_prefix", None)}

    def check_settings(self, settings: dict, *, samples: int) -> None:
        """Refuse bad settings before any model loads."""
        _settings(settings)

    def sampler(self, backend: Any, settings: dict):
        s = _settings(settings)
        if s["answer_prefix"] is None:
            raise ValueError("s1 needs an answer_prefix (the runner fills in the benchmark's)")
        tok = backend.tokenizer
        forced = forced_ids(tok, s["answer_prefix"])
        wait = tok(s["wait_text"], add_special_tokens=False)["input_ids"]
        if not wait:
            raise ValueError(f"s1 wait_text {s['wait_text']!r} encodes to no tokens")
        end_id = single_token_id(tok, THINK_END)
        if end_id is None:
            raise ValueError(f"s1 needs {THINK_END} to be one token of the model's vocabulary")

        def sample(prompt_ids: list[list[int]], n: int, max_new_tokens: int,
                   seeds: list[int]) -> list[list[tuple[Generation, dict, int]]]:
            states = [[_State(list(p), seed + j) for j in range(n)] for p, seed in zip(prompt_ids, seeds, strict=True)]
            _run(backend, [st for row in states for st in row], s, forced, wait, end_id, max_new_tokens, n, seeds)
            return [[(st.done, {NAME: {"thinking_budget": s["thinking_budget"], "thinking_tokens": _thinking(st, end_id),
                                       "waits": st.waits, "forced": st.forced}}, st.new_tokens)
                     for st in row] for row in states]

        return sample


def _thinking(st: _State, end_id: int) -> int:
    ids = st.done.token_ids if st.done else st.ids
    return ids.index(end_id) if end_id in ids else len(ids)


def _run(backend: Any, states: list[_State], s: dict, forced: list[int], wait: list[int], end_id: int,
         max_new_tokens: int, n: int, seeds: list[int]) -> None:
    """Generate round by round, one batched ``backend.generate`` call per round, until every state is done."""
    budget, room = s["thinking_budget"], 1 + s["answer_tokens"]
    first = True
    while True:
        todo = [st for st in states if st.done is None and not st.forced]
        to_force = [st for st in states if st.done is None and st.forced]
        if to_force:  # cut at the budget: </think> + lead-in, then the answer
            conts = backend.generate([st.prompt_ids + st.ids + forced for st in to_force], n=1,
                                     max_new_tokens=s["answer_tokens"],
                                     seeds=[st.seed + SEED_STRIDE * (st.rounds + 1) for st in to_force])
            for st, (c,) in zip(to_force, conts, strict=True):
                ids = st.ids + forced + c.token_ids
                st.done = Generation(backend.tokenizer.decode(ids, skip_special_tokens=True), len(ids), c.finished, ids)
                st.new_tokens += c.num_tokens
        if not todo:
            return
        if first:  # the base samples: n per prompt, one seed per prompt as the backend draws them
            outs = backend.generate([st.prompt_ids for st in todo[::n]], n=n,
                                    max_new_tokens=min(max_new_tokens, budget + room), seeds=seeds)
            conts = [g for row in outs for g in row]
            first = False
        else:
            conts = _continue(backend, todo, max_new_tokens, budget, room)
        for st, c in zip(todo, conts, strict=True):
            st.rounds += 1
            st.new_tokens += c.num_tokens
            _advance(st, c, s, wait, end_id, backend.tokenizer, max_new_tokens)


def _continue(backend: Any, states: list[_State], max_new_tokens: int, budget: int, room: int) -> list[Generation]:
    """Continuations whose caps differ: one ``generate`` call per distinct cap (batched within it)."""
    out: dict[int, Generation] = {}
    by_cap: dict[int, list[int]] = {}
    for i, st in enumerate(states):
        by_cap.setdefault(min(max_new_tokens - len(st.ids), budget - len(st.ids) + room), []).append(i)
    for cap, idx in sorted(by_cap.items()):
        conts = backend.generate([states[i].prompt_ids + states[i].ids for i in idx], n=1, max_new_tokens=max(cap, 1),
                                 seeds=[states[i].seed + SEED_STRIDE * states[i].rounds for i in idx])
        for i, (c,) in zip(idx, conts, strict=True):
            out[i] = c
    return [out[i] for i in range(len(states))]


def _advance(st: _State, c: Generation, s: dict, wait: list[int], end_id: int, tok: Any,
             max_new_tokens: int) -> None:
    """Decide what a state does after a round: done as generated, extend with Wait, or force at the budget."""
    budget = s["thinking_budget"]
    combined = st.ids + list(c.token_ids)
    if end_id in c.token_ids:
        thinking = len(st.ids) + c.token_ids.index(end_id)  # thinking tokens before </think>
        if thinking > budget:
            st.ids, st.forced = combined[:budget], True
        elif thinking < s["min_thinking_tokens"] and st.waits < s["max_waits"]:
            st.ids, st.waits = combined[:thinking] + wait, st.waits + 1
            if len(st.ids) >= min(budget, max_new_tokens):  # no room left to think on: force now
                st.ids, st.forced = st.ids[:budget], True
        else:
            st.done = Generation(tok.decode(combined, skip_special_tokens=True), len(combined), c.finished, combined)
    elif c.finished and len(combined) <= budget:  # ended without closing its thinking, within the budget
        st.done = Generation(tok.decode(combined, skip_special_tokens=True), len(combined), True, combined)
    else:  # still thinking at the budget (or at the cap): force
        st.ids, st.forced = combined[:budget], True


METHOD = S1()
