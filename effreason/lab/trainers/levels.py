"""Teach the lab model to read a length level in its prompt: a short SFT warm-up before TLDR.

The lab overthinker never saw a length instruction, and RL alone did not teach it to read one within
the lab's minutes (measured, see recipes/configs/lab/tldr.yaml): every level drifted to the same
length. Real instruction-tuned LLMs already follow "think briefly"; the lab model gets that ability
from a few SFT steps on lab traces whose style matches the level (short: concise, medium: concise
steps plus one final re-check, long: verbose), starting from the overthinker. TLDR's RL then works
on a model that can tell the levels apart. This warm-up is **the project's choice** for the lab; the
TLDR paper's models were SFT-distilled reasoners before their RL.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from pathlib import Path

from effreason.jsonl import atomic_directory, write_json
from effreason.lab.datasets import lab_problems
from effreason.lab.traces import CONCISE, VERBOSE, TraceStyle, write_trace
from effreason.lab.trainers.bootstrap import encode_example
from effreason.lab.trainers.warmup import GATE_EVERY, GATE_MIN_STEPS, dev_generations, gated_warmup, sft_steps

logger = logging.getLogger(__name__)

#: Trace style per level name.
LEVEL_STYLES: dict[str, TraceStyle] = {
    "short": CONCISE,
    "medium": TraceStyle(check=0.1, error=0.02, final_check=0.95),
    "long": VERBOSE,
}


def level_examples(tokenizer, instructions: Mapping[str, str], num: int, seed: int) -> list[tuple[list[int], int]]:
    """``num`` (prompt + trace + eos, prompt length) examples; each train problem gets a random level."""
    unknown = sorted(set(instructions) - set(LEVEL_STYLES))
    if unknown:
        raise ValueError(f"lab level warm-up: no trace style for levels {unknown}; lab levels: {sorted(LEVEL_STYLES)}")
    problems, rng, names = lab_problems("train"), random.Random(seed), sorted(instructions)
    examples = []
    for _ in range(num):
        problem, level = rng.choice(problems), rng.choice(names)
        trace = write_trace(problem, LEVEL_STYLES[level], rng)
        examples.append(encode_example(tokenizer, problem.text(), trace.text, instructions[level]))
    return examples


def warm_up_levels(model, tokenizer, instructions: Mapping[str, str], *, steps: int, batch_size: int = 32,
                   learning_rate: float = 1e-3, seed: int = 0) -> float:
    """SFT ``model`` in place on level-styled lab traces (loss on the completion, constant rate);
    returns seconds."""
    examples = level_examples(tokenizer, instructions, steps * batch_size, seed)
    return sft_steps(model, tokenizer, examples, steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                     seed=seed, name="level warm-up")


def levels_check(model, tokenizer, instructions: Mapping[str, str], *, min_accuracy: float = 0.95,
                 min_long_accuracy: float = 0.8, min_step: float = 1.4, limit: int | None = None) -> dict:
    """What TLDR needs of its start model, on dev problems at each level: the levels read apart (mean
    tokens rise by at least ``min_step``x from each level to the next longer one, in ``LEVEL_STYLES``
    order) and accurate (``min_accuracy``; ``min_long_accuracy`` for ``long``, whose verbose traces
    cost accuracy). The TLDR default's warm-up measured, on the 300 dev problems, short / medium / long
    accuracy 1.000 / 1.000 / 0.850 at 40.7 / 81.6 / 149.9 tokens."""
    out, passed = {}, True
    for name in [n for n in LEVEL_STYLES if n in instructions]:
        gens = dev_generations(model, tokenizer, instruction=instructions[name], limit=limit)
        accuracy = sum(correct for _, correct, _ in gens) / len(gens)
        tokens = sum(n for *_, n in gens) / len(gens)
        passed &= accuracy >= (min_long_accuracy if name == "long" else min_accuracy)
        if out:
            passed &= tokens >= min_step * list(out.values())[-1]["tokens_mean"]
        out[name] = {"accuracy": accuracy, "tokens_mean": tokens}
    return {**out, "passed": passed}


def warm_started_model(model_path: str, out_dir: str | Path, instructions: Mapping[str, str], *, steps: int,
                       reinit_words: list[str] | None = None, seed: int = 0, time_limit_s: float = 540.0) -> str:
    """Save the level warm-up of ``model_path`` into ``out_dir`` (reused if already there); return it.

    The warm-up must pass ``levels_check``; a failing one trains more at the same rate until it passes
    or ``time_limit_s`` is spent (``effreason.lab.trainers.warmup`` docstring); the checks go to
    ``warmup_gate.json`` in ``out_dir``."""
    from effreason.models import load_model_and_tokenizer
    from effreason.training.embeddings import reinit_token_embeddings

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return str(out_dir)
    deadline = time.perf_counter() + time_limit_s
    model, tokenizer = load_model_and_tokenizer(model_path, device="cpu", dtype="float32")
    if reinit_words:
        reinit_token_embeddings(model, tokenizer, reinit_words, seed)
    seconds = warm_up_levels(model, tokenizer, instructions, steps=steps, seed=seed)
    checks = [] if steps < GATE_MIN_STEPS else gated_warmup(model, tokenizer, lambda: levels_check(model, tokenizer, instructions),
                 lambda r: level_examples(tokenizer, instructions, GATE_EVERY * 32, seed + 7919 * r),
                 learning_rate=1e-3, deadline=deadline, seed=seed, name="level warm-up")
    logger.info("level warm-up: %d steps in %.0fs -> %s", steps, seconds, out_dir)
    with atomic_directory(out_dir) as tmp:  # never leave a half-written model to be reused
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "warmup_gate.json", {"steps": steps, "seconds": seconds, "checks": checks})
    return str(out_dir)
