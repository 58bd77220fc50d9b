"""R1-style reasoning traces for lab problems, with a per-trace verbosity style.

A trace is ``<think> steps </think> the answer is \\boxed{ v }``. Steps are *progressive* (one
operation carried out: ``s2 1 * 3 = 3 ;``) or *functional*, the overthinking that reasoning models
show (LIMOPro's taxonomy, arXiv 2505.19187):

- verification, cued by "wait , let me check": the step just done, recomputed and confirmed;
- recompute, cued by "hmm": the same, phrased differently;
- error then correction: a wrong value, then "wait , that is wrong ." and the right step;
- final check / multi-method, cued by "let me double check" or "alternatively": the whole chain again.

The ``SLIPPY`` style adds functional steps that matter: the writer *slips* on subtractions that
should wrap around (``3 - 5`` written as ``2``, the wrap forgotten, instead of ``9``), carries the
wrong value on, and its final re-check from the start is what catches it (``... . that is wrong ;``)
and sets the right answer. Its other checks are as redundant as the verbose style's. Real R1 traces
mix both kinds, redundant re-verification and checks that fix a mistake; telling them apart is what
PIR trace pruning is for (removing a catching check leaves a trace whose last value is not the
answer, so the gold answer's perplexity jumps).

The ``REVERIFY`` style is the overthinking early-exit probes cut (arXiv 2512.05325): a few step checks,
then three cued re-verifications of the whole chain once the answer is known; the lab default of
``recipes/early_exit.py`` warms the overthinker up on it.

Verbosity is drawn once per trace (concise or verbose), so both modes coexist in the data and a
model trained on it carries a "how verbose am I being" signal in its hidden states (what steering
vectors and early-exit probes need). Every segment is labelled, and the oracle-minimal trace (the
progressive steps alone) is known for every problem.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from effreason.format import THINK_END, THINK_START
from effreason.lab.task import MODULUS, Problem, apply

PROGRESSIVE = "progressive"
SLIP = "slip"  # a progressive step carried out wrongly by the SLIPPY writer (kept by every pruner)
FUNCTIONAL_KINDS = ("verification", "recompute", "error", "correction", "final_check")


@dataclass(frozen=True)
class TraceStyle:
    """Probabilities that shape one trace.

    Attributes:
        check: after each progressive step, probability of a functional check of it.
        error: probability that a progressive step is first written with a wrong value, then corrected.
        final_check: probability of re-running the whole chain before answering.
        recompute_share: among step checks, the share phrased as "hmm , recompute" (else "wait").
        slip: probability that a wrap-around subtraction is written unwrapped (``slip_value``) and
            the wrong value carried on; a trace whose answer slipped always ends with a final check
            that recomputes the chain and corrects it.
        reverify: re-verifications of the whole chain after the last step, each opened by a cue
            ("wait , let me double check from the start :", "hmm , recompute from the start :" or
            "alternatively , compute again :"): the model goes on thinking after it has the answer.
    """

    check: float
    error: float
    final_check: float
    recompute_share: float = 0.2
    slip: float = 0.0
    reverify: int = 0


CONCISE = TraceStyle(check=0.04, error=0.01, final_check=0.05)
# Verbose checks are near-certain and mostly cued by "wait": a greedy decoder follows the single most
# likely next token, so the verbose branch must beat "go to the next step" as one token, not only
# as a sum over cue words (measured: checks split 0.39 / 0.17 between "wait" / "hmm" lost to 0.45).
VERBOSE = TraceStyle(check=0.95, error=0.06, final_check=0.9)
# The verbose writer that always slips on wrap-around subtractions (about 55% of train problems have
# one) and catches the slip in its final check; clean traces re-check at the end as often as VERBOSE.
SLIPPY = TraceStyle(check=0.95, error=0.06, final_check=0.9, slip=1.0)
SLIPPY_TERSE = TraceStyle(check=0.0, error=0.06, final_check=0.9, slip=1.0)  # slips, no step checks
# The re-verifier: some step checks (cued like the verbose writer's), then three cued re-verifications of the
# whole chain once the answer is known, the overthinking early-exit probes cut (arXiv 2512.05325).
REVERIFY = TraceStyle(check=0.3, error=0.0, final_check=0.0, recompute_share=0.3, reverify=3)
STYLES = {"verbose": VERBOSE, "concise": CONCISE, "slippy": SLIPPY, "slippy_terse": SLIPPY_TERSE,
          "reverify": REVERIFY}
#: The re-verifier's cues, with the chance of each.
REVERIFY_CUES = (("wait , let me double check from the start :", 0.5), ("hmm , recompute from the start :", 0.25),
                 ("alternatively , compute again :", 0.25))


@dataclass(frozen=True)
class Trace:
    """A completion as labelled segments ``(kind, text)``; ``kind`` is PROGRESSIVE or functional."""

    segments: tuple[tuple[str, str], ...]
    answer: int

    @property
    def thinking(self) -> str:
        return " ".join(text for _, text in self.segments)

    @property
    def text(self) -> str:
        """The full completion text."""
        return f"{THINK_START} {self.thinking} {THINK_END} {answer_suffix(self.answer)}"


#: Words that open the lab's final answer (what budget forcing appends after ``</think>``).
ANSWER_PREFIX = "the answer is \\boxed{"


def answer_suffix(answer: int | str) -> str:
    """What follows ``</think>``; the same ``\\boxed{}`` format the real-model path grades."""
    return f"{ANSWER_PREFIX} {answer} }}"


def _step(i: int, a: int, op: str, b: int, c: int) -> str:
    return f"s{i} {a} {op} {b} = {c} ;"


def _chain(problem: Problem) -> str:
    x, parts = problem.start, []
    for op, b in problem.ops:
        y = apply(op, x, b)
        parts.append(f"{x} {op} {b} = {y} ,")
        x = y
    return " ".join(parts)[:-2]  # drop the trailing " ,"


def slip_value(op: str, a: int, b: int) -> int | None:
    """The SLIPPY writer's mistake: ``a - b`` with ``a < b`` written as ``b - a`` (wrap forgotten);
    None for steps it does not slip on."""
    return b - a if op == "-" and a < b else None


def write_trace(problem: Problem, style: TraceStyle, rng: random.Random) -> Trace:
    """Write one trace of ``problem`` in ``style``; deterministic for a seeded ``rng``.

    (Styles without slips draw exactly the random numbers they drew before slips existed, so the
    shipped overthinker's training data is unchanged.)
    """
    segments: list[tuple[str, str]] = []
    x = problem.start  # the value the trace carries (wrong after a slip)
    for i, (op, b) in enumerate(problem.ops, start=1):
        y = apply(op, x, b)
        wrong = slip_value(op, x, b) if style.slip else None
        if wrong is not None and rng.random() < style.slip:
            segments.append((SLIP, _step(i, x, op, b, wrong)))
            y = wrong
        elif rng.random() < style.error:
            wrong = (y + rng.randint(1, MODULUS - 1)) % MODULUS
            segments.append(("error", _step(i, x, op, b, wrong)))
            segments.append(("correction", f"wait , that is wrong . {_step(i, x, op, b, y)}"))
        else:
            segments.append((PROGRESSIVE, _step(i, x, op, b, y)))
        if rng.random() < style.check:
            if rng.random() < style.recompute_share:
                segments.append(("recompute", f"hmm , recompute s{i} : {x} {op} {b} = {y} ;"))
            else:
                segments.append(("verification", f"wait , let me check s{i} : {x} {op} {b} = {y} . yes ;"))
        x = y
    caught = x != problem.answer  # a slip reached the answer: the final check always runs and catches it
    if caught or rng.random() < style.final_check:
        cue = "let me double check from the start :" if rng.random() < 0.7 else "alternatively , compute again :"
        segments.append(("final_check", f"{cue} {_chain(problem)} . {'that is wrong' if caught else 'yes'} ;"))
    for _ in range(style.reverify):  # drawn only by styles that re-verify: the others' traces are unchanged
        cue = rng.choices([c for c, _ in REVERIFY_CUES], [w for _, w in REVERIFY_CUES])[0]
        segments.append(("final_check", f"{cue} {_chain(problem)} . yes ;"))
    return Trace(tuple(segments), problem.answer)


def oracle_trace(problem: Problem) -> Trace:
    """The minimal correct trace: every step once, nothing else."""
    return write_trace(problem, TraceStyle(check=0.0, error=0.0, final_check=0.0), random.Random(0))


def sample_style(rng: random.Random, verbose_share: float) -> TraceStyle:
    """Draw a per-trace style: verbose with probability ``verbose_share``, else concise."""
    return VERBOSE if rng.random() < verbose_share else CONCISE
