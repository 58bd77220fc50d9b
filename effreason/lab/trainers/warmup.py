"""Short SFT warm-ups of the lab model on lab traces of a given style (lab recipes only).

The lab overthinker is one fixed model; some recipes need a starting model with another habit:
TLDR needs one that reads a length level in its prompt (``effreason.lab.trainers.levels``), the SFT recipe's
lab default needs a *slippy* overthinker (``slippy_start_model``). Real users start from a model
that already has the habit their data shows; the lab gets it from a few hundred SFT steps here.

Each warm-up ends with a held-out check on the ``dev`` split (greedy, never the test split) of what
its recipe needs (``slippy_check``, ``effreason.lab.trainers.levels.levels_check``), the same kind
of gate as the bootstrap's: a passing warm-up is saved as it is (byte for byte the ungated model);
a failing one trains ``GATE_EVERY`` more steps at a low constant rate on fresh traces, and again,
until it passes or ``time_limit_s`` is spent, and then raises ``GateFailed`` (nothing saved).
Warm-ups of fewer than ``GATE_MIN_STEPS`` steps are smoke runs: not checked (they cannot pass).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from effreason.jsonl import atomic_directory, write_json
from effreason.lab.datasets import lab_problems
from effreason.lab.traces import STYLES, slip_value, write_trace
from effreason.lab.trainers.bootstrap import GateFailed, encode_example, length_bucketed_batches, train_step

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


#: Extra steps between two checks of a failing warm-up; problems of the dev split a check generates on.
GATE_EVERY, GATE_PROBLEMS = 50, 300
#: Warm-ups shorter than this are smoke runs (tests, quick tries): no check, their model is saved as trained.
GATE_MIN_STEPS = 100


def dev_generations(model, tokenizer, *, instruction: str | None = None, limit: int | None = None,
                    max_new_tokens: int = 320) -> list[tuple[str, bool, int]]:
    """Greedy ``(text, correct, completion tokens)`` on the first ``limit`` (default ``GATE_PROBLEMS``) dev
    problems; leaves the weights, train mode and RNGs as they were."""
    from effreason.format import chat_prompt, chat_prompt_ids
    from effreason.generation.hf import generate_hf
    from effreason.grading import Grader

    problems = lab_problems("dev")[: limit or GATE_PROBLEMS]
    torch_rng, python_rng, training = torch.get_rng_state(), random.getstate(), model.training
    model.eval()
    try:
        gens = generate_hf(model, tokenizer, [chat_prompt_ids(tokenizer, chat_prompt(p.text(), instruction=instruction))
                                              for p in problems], max_new_tokens=max_new_tokens, batch_size=250)
    finally:
        torch.set_rng_state(torch_rng)
        random.setstate(python_rng)
        model.train(training)
    with Grader("exact") as grader:
        results = grader.grade_batch([g.text for g in gens], [str(p.answer) for p in problems])
    return [(g.text, r.correct, g.num_tokens) for g, r in zip(gens, results, strict=True)]


def gated_warmup(model, tokenizer, check: Callable[[], dict], more_examples: Callable[[int], Sequence], *,
                 learning_rate: float, deadline: float, seed: int, name: str) -> list[dict]:
    """Check a finished warm-up; while the check fails and ``deadline`` (``perf_counter``) is ahead, SFT
    ``GATE_EVERY`` steps at constant ``learning_rate`` on ``more_examples(round)`` and check again.
    Returns the checks (each with ``step``: extra steps before it); raises ``GateFailed`` when the last
    one fails."""
    checks = [{"step": 0, **check()}]
    while not checks[-1]["passed"] and time.perf_counter() < deadline:
        sft_steps(model, tokenizer, more_examples(len(checks)), steps=GATE_EVERY, learning_rate=learning_rate,
                  seed=seed + len(checks), name=f"{name} (gate)")
        checks.append({"step": GATE_EVERY * len(checks), **check()})
    for c in checks:
        logger.info("%s gate: %s", name, c)
    if not checks[-1]["passed"]:
        raise GateFailed(f"{name}: the warm-up missed its dev check within the time limit ({checks[-1]}); nothing "
                         f"saved. Rerun with another seed or more warm-up steps.", checks)
    return checks


@contextmanager
def training_threads(most: int = 4, exactly: bool = False):
    """Train with up to ``most`` CPU threads (``exactly`` ``most`` when set; restored after). Recipes run
    with ``OMP_NUM_THREADS=1`` because tiny generation batches slow down with more threads; batches
    of 32 traces do not."""
    before = torch.get_num_threads()
    torch.set_num_threads(most if exactly else max(before, min(most, os.cpu_count() or 1)))
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


def slippy_check(model, tokenizer, *, min_accuracy: float = 0.97, min_slip_rate: float = 0.75,
                 limit: int | None = None) -> dict:
    """What the SFT recipe needs of its slippy start model, on dev problems: accurate (its final check
    catches its slips) and slippy (on problems with a wrap-around subtraction, where the slippy writer
    always slips, most completions end with a final check that caught a slip, ``. that is wrong ;``),
    so that PIR has checks that matter to keep. The SFT default's warm-up (seed 0, 2 threads) measured
    accuracy 1.000 and slip rate 0.88 on the 300 dev problems (greedy does not slip on every one)."""
    problems = lab_problems("dev")[: limit or GATE_PROBLEMS]
    gens = dev_generations(model, tokenizer, limit=limit)
    wraps = [i for i, p in enumerate(problems) if any(slip_value(op, a, b) is not None for (op, b), a in
                                                       zip(p.ops, [p.start, *p.values()[:-1]], strict=True))]
    accuracy = sum(correct for _, correct, _ in gens) / len(gens)
    slip_rate = sum("that is wrong ;" in gens[i][0] for i in wraps) / max(len(wraps), 1)
    return {"accuracy": accuracy, "slip_rate": slip_rate, "tokens_mean": sum(n for *_, n in gens) / len(gens),
            "passed": accuracy >= min_accuracy and slip_rate >= min_slip_rate}


def slippy_start_model(model_path: str, out_dir: str | Path, *, steps: int, learning_rate: float = 1e-3,
                       seed: int = 0, time_limit_s: float = 540.0, threads: int | None = None) -> str:
    """The lab model of ``model_path`` warmed up on slippy traces (``SLIPPY_WARMUP_STYLES``), saved in
    ``out_dir`` (reused when already there); returns ``out_dir``.

    ``steps`` SFT steps of 32 traces, ``learning_rate`` with 50 warm-up steps and cosine decay to 0
    (measured on the lab overthinker, 600 steps: it then slips on every wrap-around subtraction and
    its final check catches every slip, 1.000 accuracy on 500 test problems; a constant rate left it
    at 0.980, with final checks that sometimes repeated the slip). Then ``slippy_check``; a failing
    check adds steps at a tenth of ``learning_rate`` until it passes or ``time_limit_s`` is spent
    (module docstring); the checks go to ``warmup_gate.json`` in ``out_dir``. ``threads``: torch
    threads while training (default: ``training_threads()``).
    """
    return style_start_model(model_path, out_dir, styles=SLIPPY_WARMUP_STYLES, check=slippy_check, steps=steps,
                             learning_rate=learning_rate, seed=seed, time_limit_s=time_limit_s, threads=threads,
                             name="slippy warm-up")


def style_start_model(model_path: str, out_dir: str | Path, *, styles: Mapping[str, float],
                      check: Callable[..., dict], steps: int, learning_rate: float = 1e-3, seed: int = 0,
                      time_limit_s: float = 540.0, threads: int | None = None, name: str = "warm-up") -> str:
    """The lab model of ``model_path`` warmed up on traces of ``styles``, gated by ``check(model, tokenizer)``,
    saved in ``out_dir`` (reused when already there); returns ``out_dir``. See ``slippy_start_model``."""
    from effreason.models import load_model_and_tokenizer

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return str(out_dir)
    deadline = time.perf_counter() + time_limit_s
    model, tokenizer = load_model_and_tokenizer(model_path, device="cpu", dtype="float32")
    examples = style_examples(tokenizer, styles, steps * 32, seed)
    with training_threads(threads or 4, exactly=threads is not None):
        seconds = sft_steps(model, tokenizer, examples, steps=steps, learning_rate=learning_rate, seed=seed,
                            cosine=True, warmup_steps=min(50, steps), name=name)
        checks = [] if steps < GATE_MIN_STEPS else gated_warmup(model, tokenizer, lambda: check(model, tokenizer),
                     lambda r: style_examples(tokenizer, styles, GATE_EVERY * 32, seed + 7919 * r),
                     learning_rate=learning_rate / 10, deadline=deadline, seed=seed, name=name)
    logger.info("%s: %d steps in %.0fs -> %s", name, steps, seconds, out_dir)
    with atomic_directory(out_dir) as tmp:  # never leave a half-written model to be reused
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "warmup_gate.json", {"steps": steps, "seconds": seconds, "checks": checks})
    return str(out_dir)


def reverify_check(model, tokenizer, *, min_accuracy: float = 0.97, min_reverifications: float = 2.0,
                   limit: int | None = None) -> dict:
    """What the early-exit recipe needs of its re-verifying start model, on dev problems: accurate, and
    re-verifying after it has the answer (at least ``min_reverifications`` whole-chain re-checks per
    completion on average), so there is overthinking for a probe to cut."""
    gens = dev_generations(model, tokenizer, limit=limit)
    accuracy = sum(correct for _, correct, _ in gens) / len(gens)
    marks = ("from the start :", "compute again :")
    reverifications = sum(sum(text.count(m) for m in marks) for text, _, _ in gens) / len(gens)
    return {"accuracy": accuracy, "reverifications": reverifications,
            "tokens_mean": sum(n for *_, n in gens) / len(gens),
            "passed": accuracy >= min_accuracy and reverifications >= min_reverifications}


#: Traces of the re-verifying warm-up (the early-exit recipe's lab start model).
REVERIFY_WARMUP_STYLES = {"reverify": 1.0}


def reverify_start_model(model_path: str, out_dir: str | Path, *, steps: int, learning_rate: float = 1e-3,
                         seed: int = 0, time_limit_s: float = 540.0, threads: int | None = None) -> str:
    """The lab model warmed up on re-verifying traces (``effreason.lab.traces.REVERIFY``: a few step checks,
    then three cued re-verifications of the whole chain once the answer is known), gated by
    ``reverify_check``; see ``style_start_model``."""
    return style_start_model(model_path, out_dir, styles=REVERIFY_WARMUP_STYLES, check=reverify_check, steps=steps,
                             learning_rate=learning_rate, seed=seed, time_limit_s=time_limit_s, threads=threads,
                             name="re-verifying warm-up")
