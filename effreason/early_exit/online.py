"""Early exit while generating: stop the thinking at a cue where the probe says the model has the answer.

Every completion is scanned as it is decoded (``effreason.early_exit.cues``). At each cue event the
probe reads the hidden state of the token the cue starts in; when the calibrated prediction set is
``{1}`` (``effreason.early_exit.conformal``) the completion is cut before that token, the exit string
(``</think>`` + the answer's lead-in) is appended, and the answer is generated from there
(``answer_tokens`` at most, greedy whatever the run's sampling). Cut, exit string and greedy answer
are what the probe's labels were made of, so the calibration applies to these exits (for events
exchangeable with the calibration events: same model, same kind of problems, same sampling of the
traces).

- HF (``generate_exit_hf``): forward hooks keep the chosen layers' state of the token fed at each
  decoding step; a ``StoppingCriteria`` pushes each new token to its row's cue scanner, asks the probe
  about confirmed cues and stops the row that exits, inside the same ``generate`` call (the batch
  goes on with the others; ``generate`` ends when every row has ended). The exiting rows then write
  their answers in one batched call from ``prefix + exit string`` (one prefill of the kept prefix).
  A cue is confirmed by the token after it, so a row generates one or two tokens past the cue before
  it stops; they are dropped and counted as generated.
- vLLM (``generate_exit_vllm``): every sample is a request stepped through the engine with its new
  tokens streamed (``RequestOutputKind.DELTA``); the driver scans them, reads the features of each
  confirmed cue with a forward pass of an HF copy of the model over the prefix (vLLM 0.31 has no
  route to hidden states on the V1 CPU runner: its ``extract_hidden_states`` is a Model Runner V2
  speculative-decoding method, GPU only), and aborts a request that exits. Requests that go on are not
  interrupted. The engine keeps decoding while the driver decides; the tokens it made past the cut are
  dropped and counted as generated (those that reached the driver; one in flight at the abort may
  go uncounted). Each decision runs the HF copy over the whole prefix (no KV cache kept between
  cues): O(cues x length) per trace, measured by ``effreason eval exit-bench --backend vllm``.
- A completion cut at ``max_new_tokens`` while thinking leaves a cue in its last token undecided on
  both backends (its confirming character never came).

Each completion records ``{"early_exit": {"delta", "exited", "exit_token", "cue", "p", "cues_seen",
"discarded"}}`` (``discarded``: tokens generated past the cut).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from effreason.early_exit.conformal import Thresholds, should_exit
from effreason.early_exit.cues import CueEvent, CueMatcher, CueScanner
from effreason.early_exit.probe import ExitProbe
from effreason.generation.types import Generation

logger = logging.getLogger(__name__)

NAME = "early_exit"
_REQUEST_IDS = itertools.count()
#: Decoding steps whose features the HF criterion keeps (a cue is confirmed within a few tokens of its start).
FEATURE_WINDOW = 64


def exit_ids(tokenizer: Any, exit_string: str) -> list[int]:
    """The exit string's token ids: ``</think>`` (one token of the model) + the answer lead-in, checked to
    round-trip (``effreason.generation.budget_forcing.forced_ids``)."""
    from effreason.format import THINK_END
    from effreason.generation.budget_forcing import forced_ids

    if not exit_string.startswith(THINK_END):
        raise ValueError(f"the exit string must start with {THINK_END}, got {exit_string!r}")
    return forced_ids(tokenizer, exit_string[len(THINK_END):])


@dataclass
class RowState:
    """One completion being decoded: its cue scanner, cues waiting for a decision, and the outcome."""

    scanner: CueScanner
    pending: list[CueEvent] = field(default_factory=list)
    ended: bool = False  # thinking closed, end of sequence, or exited
    exit: CueEvent | None = None
    p: float | None = None
    seen: int = 0  # cue events decided
    generated: int = 0  # tokens generated when it stopped

    def info(self, delta: float) -> dict:
        return {"delta": delta, "exited": self.exit is not None,
                "exit_token": None if self.exit is None else self.exit.token,
                "cue": None if self.exit is None else self.exit.cue, "p": self.p, "cues_seen": self.seen,
                "discarded": 0 if self.exit is None else self.generated - self.exit.token}


class Decider:
    """The probe and its thresholds for one delta: decides batches of cue events."""

    def __init__(self, probe: ExitProbe, delta: float):
        self.probe, self.delta = probe, delta
        self.t: Thresholds = probe.threshold(delta)

    def decide(self, states: list[RowState], events: list[CueEvent], features: torch.Tensor) -> None:
        """Decide events (in token order per row): the first one whose set is ``{1}`` is the row's exit."""
        if not events:
            return
        p = self.probe.predict(features)
        for st, ev, pi in zip(states, events, p, strict=True):
            if st.exit is not None:
                continue
            st.seen += 1
            if should_exit(float(pi), self.t):
                st.exit, st.p, st.ended = ev, float(pi), True


class ExitCriterion:
    """transformers ``StoppingCriteria`` for one ``generate`` batch: stops rows the probe exits.

    ``stopped_at`` (row -> tokens kept) tells ``generate_hf`` where each exited row ends.
    """

    def __init__(self, n_rows: int, width: int, matcher: CueMatcher, decider: Decider, seen: dict,
                 layers: Sequence[int], end_id: int | None, eos_ids: Sequence[int]):
        self.width, self.matcher, self.decider, self.seen, self.layers = width, matcher, decider, seen, layers
        self.stop_ids = set(eos_ids) | ({end_id} if end_id is not None else set())
        self.states = [RowState(matcher.scanner()) for _ in range(n_rows)]
        self.features: dict[int, torch.Tensor] = {}  # token index -> (B, D), the last FEATURE_WINDOW steps
        self.stopped_at: dict[int, int] = {}
        self.probe_s = 0.0

    def __call__(self, input_ids, scores, **kwargs):
        import time

        tic = time.perf_counter()
        t = input_ids.shape[1] - self.width  # tokens generated, this step's included
        if t >= 2:  # this step fed token t - 2: its hidden states are in the hooks' dict
            self.features[t - 2] = torch.cat([self.seen[layer] for layer in self.layers], dim=-1)
            self.features.pop(t - 2 - FEATURE_WINDOW, None)
        stop = [False] * len(self.states)
        ready_states, ready_events, ready_rows = [], [], []
        for r, token in enumerate(input_ids[:, -1].tolist()):
            st = self.states[r]
            if st.ended:
                continue
            if token in self.stop_ids:
                st.pending.extend(st.scanner.finish())
                st.ended = True
            else:
                st.pending.extend(st.scanner.push(token))
            while st.pending and st.pending[0].token <= t - 2:
                ev = st.pending.pop(0)
                if ev.token in self.features:
                    ready_states.append(st)
                    ready_events.append(ev)
                    ready_rows.append(r)
        if ready_events:
            feats = torch.stack([self.features[ev.token][r] for ev, r in zip(ready_events, ready_rows, strict=True)])
            self.decider.decide(ready_states, ready_events, feats)
            for st, r in zip(ready_states, ready_rows, strict=True):
                if st.exit is not None and r not in self.stopped_at:
                    st.generated = t
                    self.stopped_at[r], stop[r] = st.exit.token, True
        self.probe_s += time.perf_counter() - tic
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)


@dataclass
class ExitOutput:
    """One completion with early exit: the generation, what the exit did, tokens generated in all."""

    gen: Generation
    info: dict
    new_tokens: int


def _assemble(tokenizer: Any, kept: list[int], forced: list[int], cont: Generation | None) -> Generation:
    ids = kept + forced + (list(cont.token_ids) if cont is not None else [])
    finished = cont.finished if cont is not None else False
    return Generation(tokenizer.decode(ids, skip_special_tokens=True), len(ids), finished, ids)


def generate_exit_hf(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], probe: ExitProbe, delta: float,
                     *, max_new_tokens: int, batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0,
                     top_p: float = 1.0, logits_processor: Sequence | None = None,
                     stopping_criteria: Sequence | None = None, answer_tokens: int | None = None,
                     timing: dict | None = None) -> list[ExitOutput]:
    """One completion per prompt with online early exit (see the module docstring).

    The probe's tokenizer and model shape are checked here; its weights fingerprint needs the model's
    folder: call ``probe.check_model(model_path, tokenizer)`` once when you load the model.
    """
    import time

    from effreason.format import THINK_END
    from effreason.generation.hf import _eos_ids, generate_hf
    from effreason.generation.thinking import single_token_id
    from effreason.hidden import capture, num_layers

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    probe.check_model(None, tokenizer, num_layers(base), getattr(base.config, "hidden_size", None))  # shape, vocab
    end_id = single_token_id(tokenizer, THINK_END)
    matcher = CueMatcher(tokenizer, probe.cues, end_id)
    matcher.require_end_id()
    decider = Decider(probe, delta)
    forced = exit_ids(tokenizer, probe.exit_string)
    eos = _eos_ids(model, tokenizer)
    criteria: list[tuple[list[int], ExitCriterion]] = []

    def make(rows: list[int], width: int) -> ExitCriterion:
        c = ExitCriterion(len(rows), width, matcher, decider, seen, probe.layers, end_id, eos)
        criteria.append((rows, c))
        return c

    tic = time.perf_counter()
    with capture(model, probe.layers, last_only=True) as seen:
        gens = generate_hf(model, tokenizer, prompt_ids, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           do_sample=do_sample, temperature=temperature, top_p=top_p, logits_processor=logits_processor,
                           stopping_criteria=stopping_criteria, batch_criteria=make)
    states: dict[int, RowState] = {}
    for rows, c in criteria:
        for r, i in enumerate(rows):
            states[i] = c.states[r]
    exited = [i for i in range(len(prompt_ids)) if states[i].exit is not None]
    conts: dict[int, Generation] = {}
    t_answer = time.perf_counter()
    if exited:
        answers = generate_hf(model, tokenizer, [list(prompt_ids[i]) + gens[i].token_ids + forced for i in exited],
                              max_new_tokens=answer_tokens or probe.answer_tokens, batch_size=batch_size,
                              logits_processor=logits_processor, stopping_criteria=stopping_criteria)  # greedy
        conts = dict(zip(exited, answers, strict=True))
    if timing is not None:
        timing["probe_s"] = timing.get("probe_s", 0.0) + sum(c.probe_s for _, c in criteria)
        timing["answer_s"] = timing.get("answer_s", 0.0) + time.perf_counter() - t_answer
        timing["exit_generate_s"] = timing.get("exit_generate_s", 0.0) + time.perf_counter() - tic
    out = []
    for i, g in enumerate(gens):
        st = states[i]
        if st.exit is None:
            out.append(ExitOutput(g, {NAME: st.info(delta)}, g.num_tokens))
        else:
            cont = conts[i]
            out.append(ExitOutput(_assemble(tokenizer, g.token_ids, forced, cont), {NAME: st.info(delta)},
                                  st.generated + cont.num_tokens))
    return out


def generate_exit_vllm(llm: Any, tokenizer: Any, feature_model: Any, prompt_ids: Sequence[Sequence[int]],
                       probe: ExitProbe, delta: float, *, n: int, max_new_tokens: int, temperature: float = 0.0,
                       top_p: float = 1.0, seeds: Sequence[int] | None = None, lora: Any = None,
                       extra_args: dict | None = None, answer_tokens: int | None = None,
                       timing: dict | None = None) -> list[list[ExitOutput]]:
    """``n`` completions per prompt with early exit on a running vLLM engine (see the module docstring).

    Sample j of a prompt is seeded ``seed + j`` (as vLLM seeds the j-th of ``n`` samples), so a sample
    that never exits is the one ``generate_vllm`` draws.
    """
    import time

    from effreason.format import THINK_END
    from effreason.generation.thinking import single_token_id
    from effreason.generation.vllm import generate_vllm, import_vllm
    from effreason.hidden import features_at

    vllm = import_vllm()
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    end_id = single_token_id(tokenizer, THINK_END)
    stop_ids = {tokenizer.eos_token_id, end_id}
    matcher = CueMatcher(tokenizer, probe.cues, end_id)
    matcher.require_end_id()
    decider = Decider(probe, delta)
    forced = exit_ids(tokenizer, probe.exit_string)
    engine = llm.llm_engine
    tag = f"effreason-exit-{next(_REQUEST_IDS)}"
    keys = [(p, j) for p in range(len(prompt_ids)) for j in range(n)]
    toks = {key: [] for key in keys}
    states = {key: RowState(matcher.scanner()) for key in keys}
    finished = dict.fromkeys(keys, False)
    aborted: set = set()
    overrun = dict.fromkeys(keys, 0)  # tokens that reached the driver after the exit decision
    where = {}
    for p, j in keys:
        params = vllm.SamplingParams(n=1, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens,
                                     seed=None if seeds is None else seeds[p] + j, detokenize=False,
                                     extra_args=extra_args, output_kind=RequestOutputKind.DELTA)
        rid = f"{tag}-{p}-{j}"
        where[rid] = (p, j)
        engine.add_request(rid, TokensPrompt(prompt_token_ids=list(prompt_ids[p])), params, lora_request=lora)
    probe_s, tic = 0.0, time.perf_counter()
    while engine.has_unfinished_requests():
        ready: list[tuple[tuple[int, int], CueEvent]] = []
        for out in engine.step():
            key = where[out.request_id]
            if key in aborted:
                overrun[key] += len(out.outputs[0].token_ids)
                continue
            new = list(out.outputs[0].token_ids)
            toks[key].extend(new)
            st = states[key]
            for token in new:
                if st.ended:
                    break
                if token in stop_ids:
                    st.pending.extend(st.scanner.finish())
                    st.ended = True
                else:
                    st.pending.extend(st.scanner.push(token))
            if out.finished:
                finished[key] = out.outputs[0].finish_reason == "stop"
                if not st.ended:  # cut at the cap while thinking: as on HF, a cue in the last token is not decided
                    st.pending = [e for e in st.pending if e.token < len(toks[key]) - 1]
                    st.ended = True
            ready.extend((key, ev) for ev in st.pending)
            st.pending.clear()
        if not ready:
            continue
        t = time.perf_counter()
        by_key: dict = {}
        for key, ev in ready:
            by_key.setdefault(key, []).append(ev)
        order = list(by_key)
        feats = features_at(feature_model, [list(prompt_ids[k[0]]) + toks[k][: max(e.token for e in by_key[k]) + 1]
                                            for k in order],
                            [[len(prompt_ids[k[0]]) + e.token for e in by_key[k]] for k in order], probe.layers)
        flat_states, flat_events, flat_feats = [], [], []
        for k, f in zip(order, feats, strict=True):
            for e, row in zip(by_key[k], f, strict=True):
                flat_states.append(states[k])
                flat_events.append(e)
                flat_feats.append(row)
        decider.decide(flat_states, flat_events, torch.stack(flat_feats))
        to_abort = []
        for k in order:
            st = states[k]
            if st.exit is not None and k not in aborted:
                aborted.add(k)
                if not finished[k]:
                    to_abort.append(f"{tag}-{k[0]}-{k[1]}")
        if to_abort:
            engine.abort_request(to_abort)
        probe_s += time.perf_counter() - t
    for k in aborted:
        states[k].generated = len(toks[k]) + overrun[k]
    exited = [k for k in keys if states[k].exit is not None]
    t_answer = time.perf_counter()
    conts = {}
    if exited:
        answers = generate_vllm(llm, tokenizer, [list(prompt_ids[k[0]]) + toks[k][: states[k].exit.token] + forced
                                                 for k in exited],
                                max_new_tokens=answer_tokens or probe.answer_tokens, n=1, temperature=0.0,
                                lora=lora, extra_args=extra_args)  # greedy, as the labels were decoded
        conts = {k: a[0] for k, a in zip(exited, answers, strict=True)}
    if timing is not None:
        timing["probe_s"] = timing.get("probe_s", 0.0) + probe_s
        timing["answer_s"] = timing.get("answer_s", 0.0) + time.perf_counter() - t_answer
        timing["exit_generate_s"] = timing.get("exit_generate_s", 0.0) + time.perf_counter() - tic
    from effreason.format import count_completion_tokens

    results = []
    for p in range(len(prompt_ids)):
        row = []
        for j in range(n):
            k, st = (p, j), states[(p, j)]
            if st.exit is None:
                ids = toks[k]
                num = count_completion_tokens(ids, tokenizer.eos_token_id)
                gen = Generation(tokenizer.decode(ids[:num], skip_special_tokens=True), num, finished[k], ids[:num])
                row.append(ExitOutput(gen, {NAME: st.info(delta)}, num))
            else:
                kept = toks[k][: st.exit.token]
                row.append(ExitOutput(_assemble(tokenizer, kept, forced, conts[k]), {NAME: st.info(delta)},
                                      st.generated + conts[k].num_tokens))
        results.append(row)
    return results


def replay_exit(feature_model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]],
                completion_ids: Sequence[Sequence[int]], probe: ExitProbe, delta: float) -> list[RowState]:
    """Decide on finished completions (offline, as the LYNX reference evaluates): where each would exit.

    Saves no generation time: the completions were generated in full. Returns each completion's state
    (``exit`` is the event it exits at, or ``None``).
    """
    from effreason.format import THINK_END
    from effreason.generation.thinking import single_token_id
    from effreason.hidden import features_at

    matcher = CueMatcher(tokenizer, probe.cues, single_token_id(tokenizer, THINK_END))
    matcher.require_end_id()
    decider = Decider(probe, delta)
    events = [matcher.events(ids) for ids in completion_ids]
    feats = features_at(feature_model, [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)],
                        [[len(p) + e.token for e in evs] for p, evs in zip(prompt_ids, events, strict=True)],
                        probe.layers)
    states = [RowState(matcher.scanner(), ended=True) for _ in completion_ids]
    for st, evs, f in zip(states, events, feats, strict=True):
        if evs:
            p = probe.predict(f)
            first = first_exits(p, decider.t)
            st.seen = len(evs) if first is None else first + 1
            if first is not None:  # nothing is generated past the cut of a finished completion
                st.exit, st.p, st.generated = evs[first], float(p[first]), evs[first].token
    return states


def first_exits(p: np.ndarray, t: Thresholds) -> int | None:
    """Index of the first event whose prediction set is ``{1}`` among one trace's events (or ``None``)."""
    for i, pi in enumerate(p):
        if should_exit(float(pi), t):
            return i
    return None
