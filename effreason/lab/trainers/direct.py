"""The lab's base model that answers directly, without thinking: the start of the reasoning-adapter recipe.

``recipes/lora_adapter.py`` needs a base model that answers ``the answer is \\boxed{ v }`` at once, the way a
chat model answers without reasoning, and a reasoning adapter on top of it. This module trains that base
from the shipped overthinker (``lab``) with the bootstrap's machinery (``effreason.lab.trainers.warmup``):
full-parameter SFT on direct answers, loss on the answer only. Starting from the overthinker is the lab's
stand-in for a pretrained model that has the skills (here: the step table) and answers without a chain of
thought; the adapter then brings the chain back.

**Rehearsal.** The last phase mixes in the overthinker's own traces (``PHASES``' last field), with the
``<think>`` that opens them counted as prompt (no loss on it): the base keeps its step-by-step circuits but never learns
to open a chain of thought itself, so greedy it always answers directly. This is the lab's version of a
hybrid chat model (Qwen3's thinking switch: the same weights continue a chain of thought when the template
opens one). Measured without rehearsal: the direct-answer training wiped the trace skills, and a rank-32
LoRA SFT of 400 steps on 12,800 traces learned the trace format but not the steps (it wrote one value
everywhere: 200 test problems, accuracy 0.025, truncation 0.445).

What a tiny model can do in one forward pass: the composition of one or two look-ups, not six. So the direct
answers are taught on one-, two- and three-step problems (``PHASES``: most weight on two steps, which take
longest to learn); on longer chains the base answers at chance (1/11), which is what the router learns to
see. Training problems are drawn afresh per example; two- and three-step ones never from a split that is
evaluated or calibrated on (``effreason.lab.datasets.HELD_OUT``). One-step problems are drawn from all 319:
a one-step problem *is* an entry of the operation table (start, operation, operand), the lab's stand-in for
the facts a pretrained model knows, and held-out entries cannot be answered by any model that was not
taught them (measured: trained without the held-out entries, the base answered held-out one-step problems
at chance, 0.105). So ``lab_mixed``'s one-step test problems are facts the base was taught; its two-step
ones are held out and measure composition.

The words a prompt may ask a length with (``INSTRUCTION_WORDS``) never occur in lab training, so their tied
embeddings collapsed to one direction in the overthinker; the base re-draws them first (as an instruct
model's vocabulary has distinct embeddings for ordinary words), so the adapter can learn to read them.

Measured by ``direct_check`` on ``mixed_cal`` (held out): accuracy per step count; the gate needs
``MIN_ACCURACY`` on one and two steps. The shipped base: 1.000 / 0.995 on one / two steps of ``mixed_cal``,
1.000 / 1.000 on ``lab_mixed``'s test split, 0.06-0.15 on three to eight steps (chance is 1/11); 562 s
with two threads on an idle 2-core machine. The shipped base (``lab_base``) is built by
``effreason lab bootstrap-base`` (``build_direct_base``, seed 0, two threads) and its ``metrics.json`` holds
the checks; it is shipped, not built on first use, because float kernels differ between CPUs (the same
schedule lands elsewhere on another one, see ``bootstrap``) and every figure of the recipe rests on it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from effreason.jsonl import atomic_directory, write_json
from effreason.lab.datasets import HELD_OUT, lab_problems
from effreason.lab.task import Difficulty, sample_problem
from effreason.lab.traces import answer_suffix
from effreason.lab.trainers.bootstrap import GateFailed, encode_example
from effreason.lab.trainers.warmup import sft_steps, training_threads

logger = logging.getLogger(__name__)

#: (steps, peak learning rate, share of problems by step count, rehearsal share): cosine schedule per phase.
PHASES: tuple[tuple[int, float, Mapping[int, float], float], ...] = (
    (5000, 2e-3, {1: 0.25, 2: 0.55, 3: 0.2}, 0.0),
    (3000, 1e-3, {1: 0.2, 2: 0.6, 3: 0.2}, 0.0),
    (2400, 1e-3, {1: 0.2, 2: 0.6, 3: 0.2}, 0.5),
)
#: Prompt words for lengths: re-drawn in the base (see the module docstring).
INSTRUCTION_WORDS = ("think", "for", "tokens", "budget", "level", "short", "medium", "long", "be", "concise",
                     "brief", "detailed", "32", "48", "64", "96", "128", "192", "256", "384", "512")
#: The gate: held-out accuracy on one- and two-step problems (two-step ones are never trained on).
MIN_ACCURACY = {1: 0.95, 2: 0.9}


def direct_examples(tokenizer, mix: Mapping[int, float], num: int, seed: int | str,
                    rehearsal: float = 0.0) -> list[tuple[list[int], int]]:
    """``num`` (ids, prompt length) examples: direct answers (step counts drawn from ``mix``, problems drawn
    afresh, two or more steps never from a held-out split), and a ``rehearsal`` share of the overthinker's own
    traces of train problems continued after a ``<think>`` that belongs to the prompt (module docstring)."""
    from effreason.lab.traces import sample_style, write_trace

    held_out = set().union(*(lab_problems(s) for s in HELD_OUT))
    train = lab_problems("train")
    rng = random.Random(seed)
    counts, weights = list(mix), list(mix.values())
    out = []
    while len(out) < num:
        if rehearsal and rng.random() < rehearsal:  # no draw without rehearsal: phases 1-2 as built
            problem = rng.choice(train)
            ids, prompt_len = encode_example(tokenizer, problem.text(), write_trace(problem, sample_style(rng, 0.8),
                                                                                    rng).text)
            out.append((ids, prompt_len + 1))  # <think> is the prompt's: never learned as the first token
            continue
        k = rng.choices(counts, weights)[0]
        problem = sample_problem(rng, Difficulty(k, k))
        if k > 1 and problem in held_out:  # one-step problems are the operation table itself (module docstring)
            continue
        out.append(encode_example(tokenizer, problem.text(), answer_suffix(problem.answer)))
    return out


def direct_check(model, tokenizer, *, split: str = "mixed_cal", limit: int | None = None,
                 batch_size: int = 500) -> dict:
    """Greedy accuracy per step count on a held-out split, and whether the gate (``MIN_ACCURACY``) passes."""
    from effreason.format import chat_prompt, chat_prompt_ids
    from effreason.generation.hf import generate_hf
    from effreason.grading import Grader

    problems = lab_problems(split)[:limit]
    gens = generate_hf(model, tokenizer, [chat_prompt_ids(tokenizer, chat_prompt(p.text())) for p in problems],
                       max_new_tokens=16, batch_size=batch_size)
    with Grader("exact") as grader:
        results = grader.grade_batch([g.text for g in gens], [str(p.answer) for p in problems])
    by_steps: dict[int, list[bool]] = {}
    for p, r in zip(problems, results, strict=True):
        by_steps.setdefault(p.num_steps, []).append(bool(r.correct))
    accuracy = {k: sum(v) / len(v) for k, v in sorted(by_steps.items())}
    tokens = sum(g.num_tokens for g in gens) / len(gens)
    passed = all(accuracy.get(k, 0.0) >= need for k, need in MIN_ACCURACY.items())
    return {"split": split, "problems": len(problems), "accuracy_by_steps": accuracy,
            "accuracy": sum(r.correct for r in results) / len(results), "tokens_mean": tokens, "passed": passed}


def prefilled_check(model, tokenizer, *, limit: int = 200, batch_size: int = 200) -> dict:
    """Accuracy and thinking tokens when the chain of thought is opened for the base (``<think>`` prefilled), on
    the first ``limit`` dev problems: what rehearsal kept (the base never opens one itself)."""
    from effreason.format import THINK_START, chat_prompt, chat_prompt_ids
    from effreason.generation.hf import generate_hf
    from effreason.grading import Grader

    think = tokenizer.convert_tokens_to_ids(THINK_START)
    problems = lab_problems("dev")[:limit]
    gens = generate_hf(model, tokenizer, [chat_prompt_ids(tokenizer, chat_prompt(p.text())) + [think]
                                          for p in problems], max_new_tokens=320, batch_size=batch_size)
    with Grader("exact") as grader:
        results = grader.grade_batch([f"{THINK_START} {g.text}" for g in gens], [str(p.answer) for p in problems])
    return {"split": "dev", "problems": len(problems), "accuracy": sum(r.correct for r in results) / len(results),
            "tokens_mean": sum(g.num_tokens for g in gens) / len(gens)}


def build_direct_base(out_dir: str | Path, *, start: str = "lab", seed: int = 0, threads: int = 2,
                      phases: Sequence[tuple[int, float, Mapping[int, float], float]] = PHASES,
                      first_phase: int = 0, keep_failed: bool = False) -> dict:
    """Train the direct-answer base from ``start`` into ``out_dir`` (a new folder); return its metrics.

    ``first_phase``: continue a build whose earlier phases are in ``start`` (saved by a run with
    ``phases[:first_phase]``): the same weights as one run through all phases (each phase starts a fresh
    optimizer, and its data and order come from the seed and the phase's index).
    Deterministic for a seed, a CPU and a thread count. Raises ``GateFailed`` (nothing saved) when the
    held-out check fails, unless ``keep_failed``.
    """
    from effreason.models import load_model_and_tokenizer, resolve_model_path
    from effreason.training.embeddings import reinit_token_embeddings

    out_dir = Path(out_dir)
    began = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(resolve_model_path(start), device="cpu", dtype="float32")
    if first_phase == 0:
        reinit_token_embeddings(model, tokenizer, list(INSTRUCTION_WORDS), seed)
    seconds = []
    with training_threads(threads, exactly=True):
        for i, (steps, lr, mix, rehearsal) in list(enumerate(phases))[first_phase:]:
            examples = direct_examples(tokenizer, mix, steps * 32, f"direct/{seed}/{i}", rehearsal=rehearsal)
            seconds.append(sft_steps(model, tokenizer, examples, steps=steps, learning_rate=lr, seed=seed + i,
                                     cosine=True, warmup_steps=min(50, steps), name=f"direct base phase {i + 1}"))
        check = direct_check(model, tokenizer)
    logger.info("direct base: %s", check)
    metrics = {"start": start, "seed": seed, "threads": threads, "first_phase": first_phase,
               "phases": [{"steps": s, "learning_rate": lr, "mix": {str(k): v for k, v in mix.items()},
                           "rehearsal": r} for s, lr, mix, r in phases],
               "reinit_words": list(INSTRUCTION_WORDS), "train_seconds": seconds,
               "wall_time_s": time.perf_counter() - began, "check": check,
               "test": direct_check(model, tokenizer, split="mixed"),
               "thinking_prefilled": prefilled_check(model, tokenizer)}
    if not check["passed"] and not keep_failed:
        raise GateFailed(f"direct base: held-out accuracy by step count {check['accuracy_by_steps']} misses the gate "
                         f"{MIN_ACCURACY}; nothing saved (rerun with --keep-failed to keep it)", [check])
    with atomic_directory(out_dir) as tmp:
        model.generation_config.max_new_tokens = 16
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
    return metrics
