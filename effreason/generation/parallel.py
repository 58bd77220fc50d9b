"""short-m@k and first-finish: k samples in parallel, stop the rest once the first m have finished thinking.

short-m@k ("Don't Overthink it", arXiv 2505.17813) samples k completions of a prompt in parallel and
halts once m of them have finished thinking; the answer is the majority vote of those m, ties going
to the shortest. First Finish Search (arXiv 2505.18149) is short-1@k. Shorter chains are more often
right on reasoning models, so the first to finish are a cheap, good sample.

What "first" means is fixed by tokens, not by the clock, so that results do not depend on how a
backend schedules requests: all k samples advance one token per step (lockstep). A sample *finishes
thinking* at the step that emits its first ``</think>`` (or ends it: a completion that stops without
thinking markers). Its ``thinking_end`` is that step (tokens so far). The m counted samples are the
first m by ``(thinking_end, sample index)``; once they are known, every other sample is stopped at
``T``, the m-th smallest ``thinking_end``, keeping its first ``T`` tokens, and the counted ones go on
to write their answers. If fewer than m ever finish thinking, nothing is stopped.

Figures per problem: **latency tokens**, the longest of the m counted completions (what a user waits
for with k sequences decoded in parallel); **compute tokens**, all k samples as far as they got. The
reference point is majority@k over k complete samples (self-consistency).

Backends stop the others for real: HF marks their rows finished in ``generate`` (a stopping
criterion, the batch goes on with the rest); vLLM steps its engine and aborts them
(``VLLMBackend.generate_short_m``). Under the lockstep rule both equal what ``select`` derives from
k complete samples drawn with the same seeds (a stopped sample is a prefix of its complete self), which is
how ``effreason eval leaderboard`` draws the whole knob from one majority@k run (``select`` on complete
samples).

    effreason eval --model lab --benchmark lab --samples 8 --temperature 1 --short-m 3 --output runs/eval/s3at8
    effreason eval --model lab --benchmark lab --samples 8 --temperature 1 --first-finish --output runs/eval/ff8
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from effreason.generation.types import Capability, Generation

SHORT_M, FIRST_FINISH = "short_m_at_k", "first_finish"


def thinking_end(token_ids: Sequence[int], finished: bool, end_id: int) -> int | None:
    """Tokens through the first ``</think>``; a completion that ended without one finished at its end;
    ``None`` while (or if) it never finished thinking."""
    for i, token in enumerate(token_ids):
        if token == end_id:
            return i + 1
    return len(token_ids) if finished else None


def counted_samples(ends: Sequence[int | None], m: int) -> list[int]:
    """The indices of the first ``m`` samples to finish thinking, by ``(thinking_end, index)``, once m have;
    ``[]`` before."""
    done = sorted((e, i) for i, e in enumerate(ends) if e is not None)
    return [i for _, i in done[:m]] if len(done) >= m else []


def stop_length(ends: Sequence[int | None], m: int) -> int | None:
    """``T``: the step at which the uncounted samples stop (the m-th smallest ``thinking_end``), or ``None``."""
    done = sorted(e for e in ends if e is not None)
    return done[m - 1] if len(done) >= m else None


def select(gens: Sequence[Generation], m: int, end_id: int, tokenizer: Any) -> list[tuple[Generation, dict]]:
    """Each of a prompt's k samples as short-m@k leaves it, with what happened to it.

    ``gens`` are the samples as a backend returned them: already stopped (they hold at most ``T`` tokens
    and are kept as they are) or complete (``effreason eval leaderboard`` replays short-m@k on a
    majority@k run's samples: an uncounted sample is cut to its first ``T`` tokens, re-decoded). Info:
    ``k``, ``m``, ``counted``, ``thinking_end`` (``None`` if it never finished thinking), ``stopped_at``
    (``T`` for a stopped sample, else ``None``). The method adds ``overrun`` (tokens a vLLM engine made
    past the abort) where there were any.
    """
    ends = [thinking_end(g.token_ids, g.finished, end_id) for g in gens]
    counted = set(counted_samples(ends, m))
    stop = stop_length(ends, m)
    out = []
    for i, g in enumerate(gens):
        stopped = bool(counted) and i not in counted and not (g.finished and g.num_tokens <= stop)
        if stopped:  # cut to its first T tokens (a backend's stopped sample already is)
            ids = list(g.token_ids[:stop])
            text = g.text if len(ids) == g.num_tokens else tokenizer.decode(ids, skip_special_tokens=True)
            g = Generation(text=text, num_tokens=len(ids), finished=False, token_ids=ids)
        end = ends[i] if ends[i] is not None and (not stopped or ends[i] <= stop) else None
        out.append((g, {"k": len(gens), "m": m, "counted": i in counted, "thinking_end": end,
                        "stopped_at": stop if stopped else None}))
    return out


class ShortMAtK:
    """short-m@k (``--short-m M`` with ``--samples K``); ``FirstFinish`` is its m = 1."""

    name = SHORT_M
    requires = frozenset({Capability.CONTINUE_FROM_IDS, Capability.STOP_SAMPLES})
    setting_names = frozenset({"m"})

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--short-m", type=int, metavar="M",
                            help="short-m@k: of the --samples K parallel samples, stop the rest once M have finished "
                                 "thinking; vote among those M (ties to the shortest)")

    def settings(self, args: argparse.Namespace) -> dict | None:
        m = getattr(args, "short_m", None)
        return None if m is None else {"m": m}

    def m(self, settings: dict) -> int:
        m = settings.get("m")
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"{self.name}: m must be an integer >= 1, got {m!r}")
        return m

    def check_settings(self, settings: dict, *, samples: int) -> None:
        """Refuse, before any model loads, an m that the run's k samples cannot meet."""
        m = self.m(settings)
        if samples < 2 or samples < m:
            raise ValueError(f"{self.name} (m={m}) draws k = --samples samples in parallel: set --samples K with "
                             f"K >= {max(2, m)} (and --temperature > 0), got --samples {samples}")

    def sampler(self, backend: Any, settings: dict):
        from effreason.format import THINK_END
        from effreason.generation.thinking import single_token_id

        m = self.m(settings)
        end_id = single_token_id(backend.tokenizer, THINK_END)
        if end_id is None:
            raise ValueError(f"{self.name} needs {THINK_END} to be one token of the model's vocabulary, to see "
                             "when a sample finishes thinking")
        name = self.name

        def sample(prompt_ids: list[list[int]], n: int, max_new_tokens: int,
                   seeds: list[int]) -> list[list[tuple[Generation, dict, int]]]:
            if n < m:
                raise ValueError(f"{name} with m={m} needs at least m samples per problem (--samples), got {n}")
            gens = backend.generate_short_m(prompt_ids, k=n, m=m, max_new_tokens=max_new_tokens, seeds=seeds,
                                            end_id=end_id)
            # tokens generated: all the backend made (a sample cut later by select included), plus its overrun
            return [[(g, {name: {**info, "overrun": over} if over else info}, whole.num_tokens + over)
                     for (g, info), whole, over in zip(select(samples, m, end_id, backend.tokenizer), samples, overrun,
                                                       strict=True)]
                    for samples, overrun in gens]

        return sample


class FirstFinish(ShortMAtK):
    """First Finish Search (arXiv 2505.18149): short-1@k, the first sample to finish thinking answers."""

    name = FIRST_FINISH
    setting_names = frozenset()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--first-finish", action="store_true",
                            help="first-finish search: of the --samples K parallel samples, keep the first to finish "
                                 "thinking and stop the rest (short-1@k)")

    def settings(self, args: argparse.Namespace) -> dict | None:
        return {} if getattr(args, "first_finish", False) else None

    def m(self, settings: dict) -> int:
        return 1


METHOD = ShortMAtK()
FIRST_FINISH_METHOD = FirstFinish()


class LockstepStop:
    """transformers ``StoppingCriteria`` for one ``generate`` batch: stops a prompt's uncounted samples at ``T``.

    Rows of a batch advance together, so this is the lockstep rule itself. ``stopped_at`` (row ->
    tokens kept) tells ``generate_hf`` where each stopped row ends.
    """

    def __init__(self, rows: list[int], k: int, m: int, width: int, end_id: int, eos_ids: list[int]):
        self.m, self.width, self.end_id, self.eos = m, width, end_id, set(eos_ids)
        groups: dict[int, list[int]] = {}
        for r, i in sorted(enumerate(rows), key=lambda ri: ri[1]):  # by prompt, then sample index
            groups.setdefault(i // k, []).append(r)
        self.groups = list(groups.values())
        self.ends: list[int | None] = [None] * len(rows)
        self.done = [False] * len(rows)
        self.stopped_at: dict[int, int] = {}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        t = input_ids.shape[1] - self.width  # tokens generated so far, this step's included
        for r, token in enumerate(input_ids[:, -1].tolist()):
            if self.done[r]:
                continue
            if token in self.eos:
                self.done[r] = True
            if self.ends[r] is None and (token == self.end_id or token in self.eos):
                self.ends[r] = t
        stop = [False] * len(self.ends)
        for rows in self.groups:
            ends = [self.ends[r] for r in rows]
            counted = set(counted_samples(ends, self.m))
            if not counted:
                continue
            limit = stop_length(ends, self.m)
            for pos, r in enumerate(rows):
                if pos not in counted and not self.done[r] and t >= limit:
                    self.done[r], self.stopped_at[r], stop[r] = True, t, True
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)
