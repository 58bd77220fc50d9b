"""The data stages of ``recipes/early_exit.py``: rollouts, cue events with labels, features, splits.

1. Rollouts (``rollouts.jsonl``): ``samples_per_problem`` traces per training problem, sampled by the
   HF or vLLM backend; each row keeps the prompt's and the completion's token ids, and the completion
   is never re-tokenised. Your own traces (``rollouts_file``: rows with problem + completion + answer)
   are tokenised once, whole.
2. Events and labels (``events.jsonl``): every cue event of each trace's thinking
   (``effreason.early_exit.cues``); for each, the trace is cut before the cue's token, the exit string
   appended and a short answer decoded greedily, in batches (on vLLM the shared prefixes hit the
   prefix cache); the label is 1 when the *answer alone* (exit string + decoded answer, never the
   reasoning before it) is graded correct by the shared grader.
3. Features (``features.safetensors``): the chosen layers' hidden states at each event's token, all
   events of a trace from one forward pass (``effreason.hidden``).

Each file is written atomically once its stage is complete; a stage whose file exists is read back, so a
killed run resumes at the stage it was in.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effreason.early_exit.cues import CueMatcher
from effreason.jsonl import DataError, iter_jsonl, read_jsonl, require

logger = logging.getLogger(__name__)

ROLLOUTS_FILE, EVENTS_FILE, FEATURES_FILE = "rollouts.jsonl", "events.jsonl", "features.safetensors"


def sample_rollouts(backend: Any, problems: Sequence[Any], *, samples: int, max_new_tokens: int, seed: int,
                    chunk: int = 256) -> list[dict]:
    """``samples`` completions per problem, as rows with token ids."""
    rows = []
    for start in range(0, len(problems), chunk):
        part = problems[start : start + chunk]
        gens = backend.generate([p.prompt_ids for p in part], n=samples, max_new_tokens=max_new_tokens,
                                seeds=[seed + p.index for p in part])
        for p, samples_of in zip(part, gens, strict=True):
            for s, g in enumerate(samples_of):
                rows.append({"id": f"{p.id}/{s}", "problem": p.id, "sample": s, "prompt": p.prompt,
                             "prompt_ids": list(p.prompt_ids), "completion": g.text,
                             "completion_ids": list(g.token_ids), "answer": p.answer, "finished": g.finished})
        logger.info("rollouts: %d of %d problems", min(start + chunk, len(problems)), len(problems))
    return rows


def read_user_rollouts(path: str, tokenizer: Any, problems: dict[str, Any], *, limit: int = 0) -> list[dict]:
    """Your traces as rollout rows: each ``completion`` tokenised once, whole, after its problem's prompt.

    ``problems``: problem id -> ``Problem`` (the prompts, rendered as the eval renders them).
    """
    rows = []
    for lineno, row in iter_jsonl(path):
        completion = require(row, "completion", path, lineno, str)
        pid = str(row.get("id", lineno))
        if pid not in problems:
            raise DataError(path, lineno, f"problem {pid!r} is not among the loaded problems", field="id")
        p = problems[pid]
        ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        rows.append({"id": f"{pid}/0", "problem": pid, "sample": 0, "prompt": p.prompt, "prompt_ids": list(p.prompt_ids),
                     "completion": completion, "completion_ids": ids, "answer": p.answer, "finished": True})
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise DataError(path, None, "no traces")
    return rows


def read_rollouts(path: Path) -> list[dict]:
    """Rollout rows back from ``rollouts.jsonl`` (every field checked)."""
    rows = []
    for lineno, row in iter_jsonl(path):
        for key, kind in (("id", str), ("problem", str), ("prompt_ids", list), ("completion_ids", list),
                          ("answer", str)):
            require(row, key, path, lineno, kind)
        rows.append(row)
    return rows


def find_events(rows: Sequence[dict], matcher: CueMatcher) -> list[dict]:
    """One row per cue event: ``{trace, problem, token, cue, position}`` (position in prompt + completion)."""
    events = []
    for t, row in enumerate(rows):
        for e in matcher.events(row["completion_ids"]):
            events.append({"trace": t, "trace_id": row["id"], "problem": row["problem"], "token": e.token,
                           "cue": e.cue, "position": len(row["prompt_ids"]) + e.token,
                           "thinking_tokens": matcher.thinking_tokens(row["completion_ids"])})
    return events


def label_events(backend: Any, grader: Any, rows: Sequence[dict], events: list[dict], forced: list[int],
                 exit_string: str, *, answer_tokens: int, chunk: int = 512) -> None:
    """Label each event in place: cut before its token, force the exit string, decode greedily, grade the answer.

    Adds ``label`` (1: exiting here gives the right answer), ``exit_answer`` (the graded text) and
    ``tokens_if_exit`` (kept thinking + exit string + answer tokens).
    """
    tok = backend.tokenizer
    for start in range(0, len(events), chunk):
        part = events[start : start + chunk]
        prefixes = [rows[e["trace"]]["prompt_ids"] + rows[e["trace"]]["completion_ids"][: e["token"]] + forced
                    for e in part]
        gens = backend.generate(prefixes, n=1, max_new_tokens=answer_tokens, seeds=[0] * len(part))
        texts = [exit_string + tok.decode(g[0].token_ids, skip_special_tokens=True) for g in gens]
        grades = grader.grade_batch(texts, [rows[e["trace"]]["answer"] for e in part])
        for e, g, text, gen in zip(part, grades, texts, gens, strict=True):
            e["label"] = int(bool(g.correct))
            e["exit_answer"] = text
            e["tokens_if_exit"] = e["token"] + len(forced) + gen[0].num_tokens
        logger.info("labels: %d of %d events", min(start + chunk, len(events)), len(events))


def read_events(path: Path) -> list[dict]:
    rows = read_jsonl(path)
    for lineno, row in enumerate(rows, 1):
        for key in ("trace", "problem", "token", "position", "label", "tokens_if_exit"):
            require(row, key, path, lineno)
    return rows


def event_features(model: Any, rows: Sequence[dict], events: Sequence[dict], layers: Sequence[int], *,
                   max_batch_tokens: int, pad_id: int) -> torch.Tensor:
    """``(len(events), len(layers) * hidden)``: each trace's events from one forward pass."""
    from effreason.hidden import features_at

    by_trace: dict[int, list[int]] = {}
    for i, e in enumerate(events):
        by_trace.setdefault(e["trace"], []).append(i)
    traces = sorted(by_trace)
    feats = features_at(model, [rows[t]["prompt_ids"] + rows[t]["completion_ids"] for t in traces],
                        [[events[i]["position"] for i in by_trace[t]] for t in traces], layers,
                        max_batch_tokens=max_batch_tokens, pad_id=pad_id)
    dim = next(f.shape[1] for f in feats if f.numel())
    out = torch.zeros((len(events), dim))
    for t, f in zip(traces, feats, strict=True):
        out[torch.tensor(by_trace[t])] = f
    return out


def save_features(path: Path, features: torch.Tensor) -> None:
    """Write the features as safetensors, atomically."""
    from safetensors.torch import save

    from effreason.jsonl import atomic_write

    with atomic_write(path, "wb") as f:
        f.write(save({"features": features.contiguous()}))


def load_features(path: Path, n_events: int) -> torch.Tensor:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        feats = load_file(str(path))["features"]
    except (SafetensorError, OSError, KeyError) as e:
        raise DataError(path, None, f"not this recipe's features ({e}); delete it to compute them again") from None
    if feats.shape[0] != n_events:
        raise DataError(path, None, f"holds {feats.shape[0]} feature rows for {n_events} events: it is from another "
                        "run; delete it to compute the features again")
    return feats


def train_problems(problems: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A random ``fraction`` of the distinct problems (their events train the probe; the rest calibrate it)."""
    unique = sorted(set(problems))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in order[: round(fraction * len(unique))]}


STAGES_FILE = "stages.json"


class Stages:
    """What each stage's output was made from (``stages.json``): a stage is reused only from the same input.

    ``record`` is written before the output, so an output without a matching record (its input was
    remade or changed since, or a run died between the two writes) is refused, never silently reused.
    """

    def __init__(self, root: Path):
        import json

        self.path = root / STAGES_FILE
        try:
            self.made = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(self.path, None, f"not valid JSON ({e}); delete it and the stage outputs after "
                            f"{ROLLOUTS_FILE} to make them again") from None
        if not isinstance(self.made, dict):
            raise DataError(self.path, None, "not a mapping of stage -> inputs; delete it and the stage outputs")

    @staticmethod
    def digest(*paths: Path) -> str:
        from effreason.outputs import file_sha256

        return ",".join(file_sha256(p)[:16] for p in paths)

    def reuse(self, output: Path, *inputs: Path) -> bool:
        """Whether ``output`` exists and was made from these inputs; refuse one made from others."""
        if not output.exists():
            return False
        made_from = self.made.get(output.name)
        if made_from != self.digest(*inputs):
            from effreason.errors import UserError

            raise UserError(f"{output} was made from other {' / '.join(p.name for p in inputs)} than those in "
                            f"{output.parent} now; delete it (and the outputs of later stages) to make it again")
        return True

    def record(self, output: Path, *inputs: Path) -> None:
        from effreason.jsonl import write_json

        self.made[output.name] = self.digest(*inputs)
        write_json(self.path, self.made)
