"""Building the router: the base model's own answers as labels, its prompt states as features.

``router_problems`` takes the router benchmark's training split, shuffled with the seed, for the classifier,
and a calibration split (or the next problems of the training split) for its threshold: disjoint sets.
``label_problems`` lets the base model answer each greedily (adapter off: it is the base alone) and grades
the answers with the shared grader; ``build_router`` reads the features, trains the MLP, calibrates the
threshold and returns the ``Router`` with its figures (``effreason.adapters.router``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from effreason.adapters.router import Router, choose_threshold, prompt_features, train_router

logger = logging.getLogger(__name__)


def router_problems(benchmark: str, split: str, *, train: int, calibration: int, seed: int, tokenizer: Any,
                    calibration_split: str | None = None, instruction: str | None = None,
                    system_prompt: str | None = None, data_dir: str | None = None) -> tuple[list[dict], list[dict]]:
    """``(training, calibration)`` problems: ``{id, prompt_ids, answer}`` rendered as the eval renders them.

    Training problems are ``split``'s, shuffled with ``seed``; calibration problems are ``calibration_split``'s
    (the lab's ``mixed_cal``: never trained on, by the base either) or, without one, the next ones of ``split``.

    Raises:
        ValueError: a split has fewer problems than asked for.
    """
    from effreason.benchmarks import load_benchmark
    from effreason.format import render_prompt, resolve_instruction, with_instruction, with_system_prompt

    extra = resolve_instruction(instruction)

    def rows_of(name: str, count: int, skip: int, what: str) -> list[dict]:
        data = load_benchmark(benchmark, data_dir=data_dir, split=name)
        if len(data) < skip + count:
            raise ValueError(f"router: {benchmark} {name} has {len(data)} problems, fewer than the {skip + count} "
                             f"asked for ({what}); lower router_problems / router_calibration_problems")
        order = list(range(len(data)))
        random.Random(f"{seed}/router/{name}").shuffle(order)
        out = []
        for i in order[skip : skip + count]:
            row = data[i]
            messages = with_instruction(with_system_prompt(row["prompt"], system_prompt), extra)
            out.append({"id": str(row["id"]), "prompt_ids": render_prompt(tokenizer, messages)[1],
                        "answer": str(row["answer"])})
        return out

    train_rows = rows_of(split, train, 0, "router_problems")
    if calibration_split is not None:
        return train_rows, rows_of(calibration_split, calibration, 0, "router_calibration_problems")
    return train_rows, rows_of(split, calibration, train, "router_problems + router_calibration_problems")


def label_problems(model: Any, tokenizer: Any, rows: Sequence[dict], *, grading: str, max_new_tokens: int,
                   batch_size: int) -> list[bool]:
    """Whether the base model's greedy answer to each problem is right (the shared grader)."""
    from effreason.generation.hf import generate_hf
    from effreason.grading import Grader

    gens = generate_hf(model, tokenizer, [r["prompt_ids"] for r in rows], max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
    with Grader(grading) as grader:
        results = grader.grade_batch([g.text for g in gens], [r["answer"] for r in rows])
    return [bool(r.correct) for r in results]


def build_router(model: Any, tokenizer: Any, train_rows: Sequence[dict], cal_rows: Sequence[dict], *,
                 layers: Sequence[int], grading: str, target_accuracy: float, confidence: float, seed: int,
                 max_new_tokens: int, batch_size: int, model_record: dict) -> Router:
    """Label, featurise, train and calibrate a router on the base ``model`` (see the module docstring)."""
    tic = time.perf_counter()
    rows = [*train_rows, *cal_rows]
    correct = np.array(label_problems(model, tokenizer, rows, grading=grading, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size))
    label_s = time.perf_counter() - tic
    tic = time.perf_counter()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    feats = prompt_features(model, [r["prompt_ids"] for r in rows], list(layers), pad_id=pad)
    feature_s = time.perf_counter() - tic
    n = len(train_rows)
    if correct[:n].all() or not correct[:n].any():  # nothing to tell apart: a constant score, calibrated as ever
        mlp, mean, scale, training = constant_router(feats.shape[1], float(correct[:n].mean()))
        logger.warning("router: the base answered %s of its %d training problems: the router gives every query the "
                       "same score", "all" if correct[:n].all() else "none", n)
    else:
        mlp, mean, scale, training = train_router(feats[:n], correct[:n], [r["id"] for r in train_rows], seed=seed)
    router = Router(mlp, mean, scale, list(layers), np.inf, target_accuracy, confidence, model_record)
    cal_scores = router.scores(feats[n:])
    threshold, calibration = choose_threshold(cal_scores, correct[n:], target_accuracy=target_accuracy,
                                              confidence=confidence)
    router.threshold = threshold
    router.training = {**training, "problems": n, "base_accuracy": float(correct[:n].mean()),
                       "label_seconds": label_s, "feature_seconds": feature_s}
    router.calibration = calibration
    if not np.isfinite(threshold):
        logger.warning("router: no threshold keeps the base's accuracy >= %.3f on the calibration problems: every "
                       "query goes to the adapter", target_accuracy)
    logger.info("router: threshold %.4f; calibration %s", threshold, calibration)
    return router


def constant_router(dim: int, share: float) -> tuple[Any, Any, Any, dict]:
    """A router MLP whose score is ``share`` for every query (all training labels alike), with an identity scaler."""
    import math

    import torch

    from effreason.adapters.router import HIDDEN
    from effreason.classifier import build_mlp

    mlp = build_mlp(dim, HIDDEN)
    p = min(max(share, 1e-4), 1 - 1e-4)
    with torch.no_grad():
        for param in mlp.parameters():
            param.zero_()
        mlp[-1].bias.fill_(math.log(p / (1 - p)))
    mlp.eval()
    return mlp, torch.zeros(dim), torch.ones(dim), {"constant": True, "positive_share": share}
