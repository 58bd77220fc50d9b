"""Short SFT warm-ups of the lab model on lab traces of a given style (lab recipes only).

The lab overthinker is one fixed model; some recipes need a starting model with another habit:
TLDR needs one that reads a length level in its prompt (``effreason.lab.trainers.levels``), the SFT recipe's
lab default needs a *slippy* overthinker (``slippy_start_model``). Real users start from a model
that already has the habit their data shows; the lab gets it from a few hundred SFT steps here.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from effreason.jsonl import atomic_directory
from effreason.lab.datasets import lab_problems
from effreason.lab.traces import STYLES, write_trace
from effreason.lab.trainers.bootstrap import encode_example, length_bucketed_batches, train_step

logger = logging.getLogger(__name__)


def sft_steps(model, tokenizer, examples: Sequence[tuple[list[int], int]], *, steps: int, batch_size: int = 32,
              learning_rate: float = 1e-3, seed: int = 0, cosine: bool = False, warmup_steps: int = 0,
              name: str = "warm-up") -> float:
    """SFT ``model`` in place for ``steps`` steps on ``(ids, prompt length)`` examples, loss on the
    completion; AdamW (betas 0.9 / 0.98, no weight decay), gradient norm clipped at 1. With ``cosine``
    the rate rises linearly over ``warmup_steps`` and then decays to 0 (else it stays constant).
    Returns the seconds it took."""
    batches = length_bucketed_batches(list(examples), batch_size, seed)[:steps]
    if len(batches) < steps:
        raise ValueError(f"{name}: {len(examples)} examples make {len(batches)} batches of {batch_size}, "
                         f"fewer than the {steps} steps asked for")
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.98), weight_decay=0.0)

    def rate(step: int) -> float:
        if not cosine:
            return 1.0
        return min((step + 1) / max(warmup_steps, 1), 0.5 * (1 + math.cos(math.pi * step / steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    model.train()
    start, ema = time.perf_counter(), None
    for step, batch in enumerate(batches):
        loss = train_step(model, optimizer, scheduler, batch, tokenizer.pad_token_id)
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        if step % 50 == 0 or step == steps - 1:
            logger.info("%s step %d/%d loss %.4f", name, step + 1, steps, ema)
    model.eval()
    return time.perf_counter() - start


@contextmanager
def training_threads(most: int = 4):
    """Train with up to ``most`` CPU threads (restored after). Recipes run with ``OMP_NUM_THREADS=1``
    because tiny generation batches slow down with more threads; batches of 32 traces do not."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(before, min(most, os.cpu_count() or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def style_examples(tokenizer, styles: Mapping[str, float], num: int, seed: int) -> list[tuple[list[int], int]]:
    """``num`` (prompt + trace + eos, prompt length) examples of random train problems, each written in
    a style drawn from ``styles`` (name in ``effreason.lab.traces.STYLES`` -> probability)."""
    unknown = sorted(set(styles) - set(STYLES))
    if unknown:
        raise ValueError(f"unknown lab trace styles {unknown}; styles: {sorted(STYLES)}")
    names, weights = list(styles), list(styles.values())
    problems, rng = lab_problems("train"), random.Random(seed)
    examples = []
    for _ in range(num):
        problem = rng.choice(problems)
        style = names[0] if len(names) == 1 else rng.choices(names, weights)[0]
        examples.append(encode_example(tokenizer, problem.text(), write_trace(problem, STYLES[style], rng).text))
    return examples


#: Traces of the slippy warm-up: mostly the slippy writer, and 30% without step checks, so that the
#: start model's final check works however many step checks precede it (pruned traces keep few).
#: Measured (500 test problems, ratio 0.7): with slippy traces alone, the PIR-trained model's final
#: checks sometimes added a step or misread an operand, 0.962-0.982 accuracy against the unpruned
#: model's 0.998-0.999 on two warm-up seeds; with this mix, 0.998 against 0.998.
SLIPPY_WARMUP_STYLES = {"slippy": 0.7, "slippy_terse": 0.3}


def slippy_start_model(model_path: str, out_dir: str | Path, *, steps: int, learning_rate: float = 1e-3,
                       seed: int = 0) -> str:
    """The lab model of ``model_path`` warmed up on slippy traces (``SLIPPY_WARMUP_STYLES``), saved in
    ``out_dir`` (reused when already there); returns ``out_dir``.

    ``steps`` SFT steps of 32 traces, ``learning_rate`` with 50 warm-up steps and cosine decay to 0
    (measured on the lab overthinker, 600 steps: it then slips on every wrap-around subtraction and
    its final check catches every slip, 1.000 accuracy on 500 test problems; a constant rate left it
    at 0.980, with final checks that sometimes repeated the slip).
    """
    from effreason.models import load_model_and_tokenizer

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return str(out_dir)
    model, tokenizer = load_model_and_tokenizer(model_path, device="cpu", dtype="float32")
    examples = style_examples(tokenizer, SLIPPY_WARMUP_STYLES, steps * 32, seed)
    with training_threads():
        seconds = sft_steps(model, tokenizer, examples, steps=steps, learning_rate=learning_rate, seed=seed,
                            cosine=True, warmup_steps=min(50, steps), name="slippy warm-up")
    logger.info("slippy warm-up: %d steps in %.0fs -> %s", steps, seconds, out_dir)
    with atomic_directory(out_dir) as tmp:  # never leave a half-written model to be reused
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return str(out_dir)
