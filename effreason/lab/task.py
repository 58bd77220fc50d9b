"""The lab task: chains of modular arithmetic whose steps a tiny model must actually carry out.

A problem is a start value and ``k`` numbered operations, all modulo ``MODULUS``::

    start 7 ; s1 + 5 ; s2 * 3 ; s3 - 4 ; ( mod 11 )

Each value is a single token and each step is addressable by its label (``s2``), so a 0.7M-parameter
model can learn one step per line of thought (LAB-NOTES: local addressability is what makes the
task learnable). Answering without the chain means composing ``k`` table look-ups in one forward
pass, which a tiny model cannot do: skipping steps costs accuracy, so "shorter" is a real trade-off.
The difficulty knob is the number of steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MODULUS = 11
OPS = ("+", "-", "*")
MAX_STEPS = 12  # step labels s1..s12 exist in the vocabulary


@dataclass(frozen=True)
class Difficulty:
    """How many operations a problem chains (inclusive range)."""

    min_steps: int
    max_steps: int

    def __post_init__(self):
        if not 1 <= self.min_steps <= self.max_steps <= MAX_STEPS:
            raise ValueError(
                f"difficulty needs 1 <= min_steps <= max_steps <= {MAX_STEPS}, "
                f"got min_steps={self.min_steps}, max_steps={self.max_steps}"
            )


#: The default difficulty (test split), the harder one (longer chains), and the training range,
#: which covers both so that every step label the model meets was trained.
DEFAULT_DIFFICULTY = Difficulty(3, 6)
HARD_DIFFICULTY = Difficulty(7, 8)
TRAIN_DIFFICULTY = Difficulty(2, 8)
#: The mixed split (``lab_mixed``): one to eight steps, where routing between a model that answers
#: directly (one or two steps) and one that reasons (the rest) matters.
MIXED_DIFFICULTY = Difficulty(1, 8)


@dataclass(frozen=True)
class Problem:
    """One lab problem: ``start`` then ``ops[i] = (op, operand)`` for steps 1..k, modulo ``MODULUS``."""

    start: int
    ops: tuple[tuple[str, int], ...]

    @property
    def num_steps(self) -> int:
        return len(self.ops)

    def text(self) -> str:
        """The problem statement, as the model reads it."""
        steps = " ".join(f"s{i} {op} {b} ;" for i, (op, b) in enumerate(self.ops, start=1))
        return f"start {self.start} ; {steps} ( mod {MODULUS} )"

    def values(self) -> list[int]:
        """Intermediate values after each step (``values()[-1]`` is the answer)."""
        out, x = [], self.start
        for op, b in self.ops:
            x = apply(op, x, b)
            out.append(x)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]


def apply(op: str, a: int, b: int) -> int:
    """One modular operation."""
    if op == "+":
        return (a + b) % MODULUS
    if op == "-":
        return (a - b) % MODULUS
    if op == "*":
        return (a * b) % MODULUS
    raise ValueError(f"unknown operation {op!r}; expected one of {OPS}")


def sample_problem(rng: random.Random, difficulty: Difficulty) -> Problem:
    """Draw a problem uniformly: start value, step count, then each operation and operand.

    Operands are never 0 (``+ 0`` and ``* 0`` / ``* 1`` would be steps a model could skip).
    """
    k = rng.randint(difficulty.min_steps, difficulty.max_steps)
    ops = []
    for _ in range(k):
        op = rng.choice(OPS)
        operand = rng.randint(2, MODULUS - 1) if op == "*" else rng.randint(1, MODULUS - 1)
        ops.append((op, operand))
    return Problem(rng.randrange(MODULUS), tuple(ops))


def parse_problem(text: str) -> Problem:
    """Inverse of ``Problem.text`` (used to regenerate traces for stored lab rows)."""
    words = text.split()
    try:
        if words[0] != "start" or words[2] != ";":
            raise ValueError
        start, ops, i = int(words[1]), [], 3
        while words[i] != "(":
            label, op, b, semi = words[i : i + 4]
            if label != f"s{len(ops) + 1}" or op not in OPS or semi != ";":
                raise ValueError
            ops.append((op, int(b)))
            i += 4
    except (IndexError, ValueError):
        raise ValueError(f"not a lab problem: {text[:120]!r}") from None
    return Problem(start, tuple(ops))
