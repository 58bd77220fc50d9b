"""Train the lab's overthinker: SFT of a fresh tiny Qwen3 on verbose-leaning R1-style traces.

``effreason lab bootstrap --out DIR`` writes an HF checkpoint (model + tokenizer) and
``metrics.json`` next to it. The model learns the task well (>= 95% greedy accuracy at the default
difficulty) and inherits the traces' overthinking: most traces re-verify every step, so its greedy
completions spend several times the oracle-minimal tokens. That gap is what the efficient-reasoning
recipes are meant to close.

Schedule: ``concise_steps`` steps on concise traces, then the verbose-leaning mix (the
overthinking) with the same share of verbose traces in every batch (``mixed_style_batches``), one
warm-up + cosine learning-rate schedule over ``steps``.

**Held-out accuracy gate.** Float kernels differ between CPUs and thread counts, and so does where
the same schedule lands: one CPU ended at 0.185 accuracy where the shipped run reached 0.999. So
the finished schedule is checked on the ``dev`` split (default difficulty, disjoint from train,
test and hard; the test split is never looked at), greedy, first ``gate_problems`` problems: dev
accuracy >= ``gate_accuracy`` and tokens / oracle >= ``gate_tokens_ratio``. (No earlier check: the
overthinking is learned in the verbose phase, and a run can be accurate and still concise until late
in it: one seed ended the schedule at 1.22x oracle tokens with dev accuracy 1.000.)

Only a failed check changes anything: the schedule stays at its last learning rate and the model
trains ``gate_every`` more steps on fresh examples of the verbose-leaning mix, then is checked
again, until the check passes or training has run ``time_limit_s`` seconds (480: with the
evaluation the command then stays within 10 minutes on 2 cores, with one thread as with two; on an
idle 2-core machine the schedule alone takes ~4.7 minutes with two threads, leaving ~3 repair
rounds, and ~7.9 with one, leaving none: give ``--time-limit-s`` room to let it repair). The check
leaves the weights, optimizer, data order and every RNG as they were, so a run that passes at once is the run without a gate, byte for byte. A run whose last check
fails is not saved (``GateFailed``, exit code 1) unless ``keep_failed``; its ``metrics.json``
lists every check. ``gate_problems=0`` turns the gate off.

Deterministic for a seed, a CPU and a thread count (``threads``): data, initialisation and
batching all derive from the seed; other CPUs or thread counts give other (gated) weights.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

from effreason.format import THINK_END, chat_prompt, chat_prompt_ids
from effreason.jsonl import atomic_directory
from effreason.lab.datasets import lab_problems
from effreason.lab.model import build_lab_model
from effreason.lab.tokenizer import build_lab_tokenizer
from effreason.lab.traces import sample_style, write_trace
from effreason.lab.trainers.config import BootstrapConfig
from effreason.outputs import OutputExistsError, refuse_unowned_directory

logger = logging.getLogger(__name__)


def training_examples(tokenizer, num: int, seed: int | str, verbose_share: float) -> list[tuple[list[int], int]]:
    """``num`` tokenized (prompt + trace + eos) sequences with their prompt length, from train problems."""
    problems = lab_problems("train")
    rng = random.Random(seed)
    examples = []
    for _ in range(num):
        problem = rng.choice(problems)
        examples.append(encode_example(tokenizer, problem.text(), write_trace(problem, sample_style(rng, verbose_share),
                                                                              rng).text))
    return examples


def encode_example(tokenizer, problem: str, completion: str, instruction: str | None = None) -> tuple[list[int], int]:
    """``(prompt + completion + eos ids, prompt length)`` of one lab SFT example (chat prompt as evaluated)."""
    prompt = chat_prompt_ids(tokenizer, chat_prompt(problem, instruction=instruction))
    return prompt + tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id], len(prompt)


def collate(batch: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch; labels are -100 on the prompt and padding (loss on the completion only)."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention[row, : len(ids)] = 1
    return input_ids, attention, labels


def train_step(model, optimizer, scheduler, batch: list[tuple[list[int], int]], pad_id: int) -> float:
    """One SFT step on ``batch`` (loss on the completion, gradient norm clipped at 1); returns the loss."""
    input_ids, attention, labels = collate(batch, pad_id)
    loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def length_bucketed_batches(examples: list, batch_size: int, seed: int | str, chunk_batches: int = 50) -> list[list]:
    """Group examples of similar length into batches (less padding), then shuffle the batch order.

    Sorting happens within chunks of ``chunk_batches`` batches so the data order stays mixed.
    """
    rng = random.Random(seed)
    batches = []
    chunk = batch_size * chunk_batches
    for start in range(0, len(examples), chunk):
        part = sorted(examples[start : start + chunk], key=lambda e: len(e[0]))
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def mixed_style_batches(tokenizer, num_batches: int, batch_size: int, seed: int | str,
                        verbose_share: float, chunk_batches: int = 50) -> list[list]:
    """``num_batches`` batches of the verbose-leaning mix in which *every* batch holds
    ``round(verbose_share * batch_size)`` verbose traces and concise ones for the rest.

    Each style is length-sorted within chunks of ``chunk_batches`` batches (little padding), the i-th
    shortest verbose slice joins the i-th shortest concise slice, then the batch order is shuffled.
    Why not ``length_bucketed_batches`` over the mix: concise traces are ~3x shorter, so sorting by length
    made the shortest batches all concise and the longest all verbose, and the greedy choice between
    checking a step ("wait") and going on flipped with the last few batches: runs ended concise (1.00x
    oracle tokens) or flipped between gate checks. A fixed share per batch costs ~15% padding (a
    concise row is padded to its batch's verbose length).
    """
    n_verbose = round(verbose_share * batch_size)
    n_concise = batch_size - n_verbose
    if n_verbose in (0, batch_size):
        return length_bucketed_batches(training_examples(tokenizer, num_batches * batch_size, seed, verbose_share),
                                       batch_size, seed, chunk_batches)
    verbose = training_examples(tokenizer, num_batches * n_verbose, f"{seed}/verbose", 1.0)
    concise = training_examples(tokenizer, num_batches * n_concise, f"{seed}/concise", 0.0)
    batches = []
    for start in range(0, num_batches, chunk_batches):
        count = min(chunk_batches, num_batches - start)
        v = sorted(verbose[start * n_verbose : (start + count) * n_verbose], key=lambda e: len(e[0]))
        c = sorted(concise[start * n_concise : (start + count) * n_concise], key=lambda e: len(e[0]))
        batches += [v[i * n_verbose : (i + 1) * n_verbose] + c[i * n_concise : (i + 1) * n_concise]
                    for i in range(count)]
    random.Random(seed).shuffle(batches)
    return batches


def _lr_lambda(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


class GateFailed(RuntimeError):
    """A lab trainer's last gate check failed within its time limit; ``checks``: every check made."""

    def __init__(self, message: str, checks: list[dict] | None = None):
        super().__init__(message)
        self.checks = checks or []


class _Paused:
    """Stands in for the scheduler during gate steps: the learning rate stays where the schedule was."""

    def step(self) -> None:
        pass


def gate_check(model, tokenizer, cfg: BootstrapConfig, step: int) -> dict:
    """Greedy dev accuracy and tokens / oracle of the model after ``step`` steps, against the gate.

    Leaves the weights, the train mode and the torch and ``random`` RNG states as they were.
    """
    torch_rng, python_rng = torch.get_rng_state(), random.getstate()
    model.eval()
    try:
        dev = evaluate_split(model, tokenizer, "dev", limit=cfg.gate_problems, batch_size=cfg.eval_batch_size,
                             max_new_tokens=cfg.max_new_tokens)
    finally:
        torch.set_rng_state(torch_rng)
        random.setstate(python_rng)
        model.train()
    ratio = dev["tokens_mean"] / dev["oracle_tokens_mean"]
    passed = dev["accuracy"] >= cfg.gate_accuracy and ratio >= cfg.gate_tokens_ratio
    logger.info("gate (step %d): dev accuracy %.3f (need %.2f), tokens %.2fx oracle (need %.2f): %s", step,
                dev["accuracy"], cfg.gate_accuracy, ratio, cfg.gate_tokens_ratio, "pass" if passed else "FAIL")
    return {"step": step, "accuracy": dev["accuracy"], "tokens_ratio": ratio, "passed": passed}


def hold_at_gate(model, tokenizer, optimizer, cfg: BootstrapConfig, *, step: int,
                 deadline: float) -> tuple[list[dict], list[float]]:
    """Check the gate; while it fails and ``deadline`` (``perf_counter``) is ahead, train ``cfg.gate_every``
    steps at the current learning rate on fresh examples of the verbose-leaning mix, then check again.
    Returns the checks and the losses of the extra steps."""
    checks, losses, paused = [gate_check(model, tokenizer, cfg, step)], [], _Paused()
    while not checks[-1]["passed"] and time.perf_counter() < deadline:
        seed = f"gate/{cfg.seed}/{len(checks)}"  # apart from the schedule's integer seeds
        for batch in mixed_style_batches(tokenizer, cfg.gate_every, cfg.batch_size, seed, cfg.verbose_share):
            if time.perf_counter() >= deadline:
                break
            losses.append(train_step(model, optimizer, paused, batch, tokenizer.pad_token_id))
        checks.append(gate_check(model, tokenizer, cfg, step + len(losses)))
    return checks, losses


def train(cfg: BootstrapConfig):
    """SFT a fresh lab model under the held-out gate.

    Returns ``(model, tokenizer, train_seconds, final_loss, gate)``; ``gate`` holds ``checks`` (every
    check, in order), ``extra_steps`` (steps the gate added), ``steps_trained`` and ``passed``.
    """
    began = time.perf_counter()
    deadline = began + cfg.time_limit_s
    torch.set_num_threads(cfg.threads)
    tokenizer = build_lab_tokenizer()
    model = build_lab_model(tokenizer, seed=cfg.seed, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                            intermediate_size=cfg.intermediate_size)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("lab model: %.2fM parameters", n_params / 1e6)
    # Curriculum: concise traces first (every token carries a look-up or a computation, at a third
    # of the cost), then the verbose-leaning mixture that makes the model an overthinker.
    batches = mixed_style_batches(tokenizer, cfg.concise_steps, cfg.batch_size, cfg.seed, verbose_share=0.0)
    batches += mixed_style_batches(tokenizer, cfg.steps - cfg.concise_steps, cfg.batch_size, cfg.seed + 1,
                                   cfg.verbose_share)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.98), weight_decay=cfg.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps, cfg.steps))
    model.train()
    start, ema = time.perf_counter(), None
    for step in range(cfg.steps):
        loss = train_step(model, optimizer, schedule, batches[step], tokenizer.pad_token_id)
        ema = loss if ema is None else 0.95 * ema + 0.05 * loss
        if step % 100 == 0 or step == cfg.steps - 1:
            logger.info("step %d/%d loss %.4f (%.0fs)", step + 1, cfg.steps, ema, time.perf_counter() - start)
    checks, losses = [], []
    if cfg.gate_problems:
        checks, losses = hold_at_gate(model, tokenizer, optimizer, cfg, step=cfg.steps, deadline=deadline)
    for loss in losses:
        ema = 0.95 * ema + 0.05 * loss
    model.eval()
    summary = {"passed": not checks or checks[-1]["passed"], "checks": checks, "extra_steps": len(losses),
               "steps_trained": cfg.steps + len(losses)}
    return model, tokenizer, time.perf_counter() - start, ema, summary


def evaluate_split(model, tokenizer, split: str, *, limit: int | None, batch_size: int,
                   max_new_tokens: int) -> dict:
    """Greedy accuracy and completion tokens on a lab split, graded by the shared grader."""
    from effreason.generation.hf import generate_hf
    from effreason.grading import Grader
    from effreason.lab.datasets import lab_dataset

    ds = lab_dataset(split, limit=limit)
    gens = generate_hf(model, tokenizer, [chat_prompt_ids(tokenizer, p) for p in ds["prompt"]],
                       max_new_tokens=max_new_tokens, batch_size=batch_size)
    with Grader("exact") as grader:
        results = grader.grade_batch([g.text for g in gens], ds["answer"])
    oracle = [len(tokenizer(s, add_special_tokens=False)["input_ids"]) + 1 for s in ds["solution"]]  # + eos
    n = len(ds)
    return {
        "n": n,
        "accuracy": sum(r.correct for r in results) / n,
        "tokens_mean": sum(g.num_tokens for g in gens) / n,
        "oracle_tokens_mean": sum(oracle) / n,
        "truncation_rate": sum(not g.finished for g in gens) / n,
        "example": gens[0].text,
    }


def no_think_accuracy(model, tokenizer, *, limit: int | None, batch_size: int) -> float:
    """Accuracy when the model must answer at once: thinking is closed before it starts.

    Measures how much the task needs its chain of thought (a direct answer is a guess among
    ``MODULUS`` values unless the model can compose every step in one pass).
    """
    from effreason.generation.hf import generate_hf
    from effreason.grading import Grader
    from effreason.lab.datasets import lab_dataset
    from effreason.lab.traces import ANSWER_PREFIX

    ds = lab_dataset("test", limit=limit)
    forced = f"<think> {THINK_END} {ANSWER_PREFIX}"
    forced_ids = tokenizer(forced, add_special_tokens=False)["input_ids"]
    prompts = [chat_prompt_ids(tokenizer, p) + forced_ids for p in ds["prompt"]]
    gens = generate_hf(model, tokenizer, prompts, max_new_tokens=3, batch_size=batch_size)
    with Grader("exact") as grader:
        results = grader.grade_batch([f"{forced} {g.text}" for g in gens], ds["answer"])
    return sum(r.correct for r in results) / len(ds)


def is_lab_checkpoint(path: Path) -> bool:
    """Whether ``path`` holds what ``run_bootstrap`` writes (a model config and ``metrics.json``)."""
    return (path / "config.json").is_file() and (path / "metrics.json").is_file()


def run_bootstrap(cfg: BootstrapConfig, out: str | Path, *, overwrite: bool = False, keep_failed: bool = False) -> dict:
    """Train, save the checkpoint and ``metrics.json`` into ``out``, and return the metrics.

    The directory is written in full next to ``out`` and renamed into place at the end, so an
    interrupted run never leaves a half-written checkpoint. ``overwrite`` replaces a lab checkpoint
    (``config.json`` and ``metrics.json``), never a folder of other files. A run that fails the gate
    raises ``GateFailed`` after its evaluation and writes nothing (``out`` keeps what it held) unless
    ``keep_failed``.
    """
    out = Path(out)
    refuse_unowned_directory(out, is_lab_checkpoint(out), "`effreason lab bootstrap` (it holds no lab checkpoint)")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out} holds a lab checkpoint; pass --overwrite to replace it")
    t0 = time.perf_counter()
    model, tokenizer, train_s, loss, gate = train(cfg)
    test = evaluate_split(model, tokenizer, "test", limit=cfg.eval_limit,
                          batch_size=cfg.eval_batch_size, max_new_tokens=cfg.max_new_tokens)
    hard = evaluate_split(model, tokenizer, "hard", limit=cfg.eval_limit and cfg.eval_limit // 2,
                          batch_size=cfg.eval_batch_size, max_new_tokens=cfg.max_new_tokens)
    metrics = {
        "accuracy": test["accuracy"],
        "tokens_mean": test["tokens_mean"],
        "oracle_tokens_mean": test["oracle_tokens_mean"],
        "tokens_ratio": test["tokens_mean"] / test["oracle_tokens_mean"],
        "truncation_rate": test["truncation_rate"],
        "n": test["n"],
        "hard_accuracy": hard["accuracy"],
        "hard_tokens_mean": hard["tokens_mean"],
        "hard_oracle_tokens_mean": hard["oracle_tokens_mean"],
        "no_think_accuracy": no_think_accuracy(model, tokenizer, limit=cfg.eval_limit,
                                               batch_size=cfg.eval_batch_size),
        "final_train_loss": loss,
        "steps_trained": gate["steps_trained"],
        "gate": gate,
        "train_time_s": train_s,
        "wall_time_s": time.perf_counter() - t0,
        "example_completion": test["example"],
        "config": asdict(cfg),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    if not gate["passed"] and not keep_failed:
        last = gate["checks"][-1]
        raise GateFailed(f"lab bootstrap: dev accuracy {last['accuracy']:.3f}, tokens {last['tokens_ratio']:.2f}x oracle "
                         f"after {gate['steps_trained']} steps missed the gate (test accuracy {test['accuracy']:.3f}); "
                         f"nothing written to {out}. Rerun with another --seed or a larger --time-limit-s.", gate["checks"])
    with atomic_directory(out, replace=is_lab_checkpoint(out)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("wrote %s (accuracy %.3f, %.1f tokens = %.2fx oracle)", out, metrics["accuracy"],
                metrics["tokens_mean"], metrics["tokens_ratio"])
    return metrics
