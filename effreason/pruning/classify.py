"""Label reasoning steps as progressive or functional, by marker phrases.

LIMOPro's taxonomy (arXiv 2505.19187): *progressive* steps advance the solution and are always
kept; *functional* steps are verification ("Wait", "Let me check"), multi-method ("Alternatively")
and error correction ("This is wrong", "The mistake was"). A step is functional when one of its
first ``window_words`` words starts a marker phrase, matched case-insensitively on whole words
("await" is not "wait"; "double-check" and "double check" are the same).

Not implemented: the paper's LLM classifier for steps with no marker. Unmarked steps are
progressive here (so they are never pruned). An LLM classifier plugs in as another
``StepClassifier`` (a callable from the list of steps to their labels). The phrase lists are
``MarkerConfig``'s, and ``load_marker_config`` reads them from a file (``effreason prune --markers``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Protocol

PROGRESSIVE = "progressive"
VERIFICATION = "verification"
MULTI_METHOD = "multi_method"
ERROR_CORRECTION = "error_correction"
FUNCTIONAL_LABELS = (VERIFICATION, MULTI_METHOD, ERROR_CORRECTION)

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class StepClassifier(Protocol):
    """Labels steps (stripped texts, in order) with PROGRESSIVE or one of FUNCTIONAL_LABELS."""

    def __call__(self, steps: Sequence[str]) -> list[str]: ...


def words(text: str) -> tuple[str, ...]:
    """Lower-case words of ``text``: hyphens and punctuation separate words, apostrophes do not."""
    text = text.lower().replace("\u2019", "'").replace("-", " ")
    return tuple(_WORD.findall(text))


@dataclass(frozen=True)
class MarkerConfig:
    """Marker phrases per functional kind (the lab's cue words are included).

    Attributes:
        verification: phrases that open a check of earlier work.
        multi_method: phrases that open a second way of solving.
        error_correction: phrases that say earlier work was wrong (checked first, so
            "Wait, that is wrong" is an error correction, not a verification).
        retraction: error-correction phrases that refer to the *previous* step; with
            ``label_retracted_step`` that previous (erroneous) step is functional too, as the lab
            generator labels it ("s2 6 - 3 = 5 ;" then "wait , that is wrong . s2 6 - 3 = 3 ;").
        window_words: a marker must start within the first this-many words of a step.
        label_retracted_step: see ``retraction``.
    """

    verification: tuple[str, ...] = (
        "wait", "hmm", "let me check", "let's check", "let me double check", "double check",
        "let me verify", "verify", "verifying", "to verify", "let me confirm", "let me recheck",
        "recheck", "recompute", "let me recompute", "check again", "checking", "sanity check",
        "let me make sure", "let me see if", "does that make sense", "is that right",
    )
    multi_method: tuple[str, ...] = (
        "alternatively", "another way", "another approach", "another method", "a different approach",
        "a different way", "let me try another", "let me try a different", "compute again",
        "let me try again", "or we could", "we could also",
    )
    error_correction: tuple[str, ...] = (
        "this is wrong", "that is wrong", "that's wrong", "this is incorrect", "that is incorrect",
        "that's incorrect", "that's not right", "that is not right", "this can't be right",
        "that can't be right", "the mistake", "my mistake", "i made a mistake", "i made an error",
        "oops", "no wait", "scratch that", "correction",
    )
    retraction: tuple[str, ...] = (
        "this is wrong", "that is wrong", "that's wrong", "this is incorrect", "that is incorrect",
        "that's incorrect", "that's not right", "that is not right", "this can't be right",
        "that can't be right", "the mistake", "my mistake", "i made a mistake", "i made an error",
        "oops", "scratch that",
    )
    window_words: int = 6
    label_retracted_step: bool = True

    def __post_init__(self):
        if self.window_words < 1:
            raise ValueError(f"window_words must be >= 1, got {self.window_words}")
        for name in ("verification", "multi_method", "error_correction", "retraction"):
            if any(not words(p) for p in getattr(self, name)):
                raise ValueError(f"MarkerConfig.{name} has a phrase with no words; remove it")


_PHRASE_KINDS = ("verification", "multi_method", "error_correction", "retraction")


def load_marker_config(path: str | Path) -> MarkerConfig:
    """A ``MarkerConfig`` from a YAML (or JSON) file, for ``effreason prune --markers`` and the recipes.

    Keys are ``MarkerConfig``'s fields; a phrase list replaces the default one, or is added to it
    when the file sets ``extend: true``. Example (markers of another language, kept with the
    English ones)::

        extend: true
        verification: ["warte", "moment"]
        multi_method: ["alternativ"]

    Raises:
        ValueError: naming the file and the key for an unknown key (with the closest spelling), a
            list that is not of strings, or a file that is not a mapping.
    """
    import yaml

    from effreason.training.args import unknown_key_error

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: marker file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid YAML/JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of marker settings, got {type(data).__name__}")
    extend = data.pop("extend", False)
    if not isinstance(extend, bool):
        raise ValueError(f"{path}: 'extend' must be true or false, got {extend!r}")
    valid = {f.name for f in fields(MarkerConfig)}
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise unknown_key_error(unknown, valid | {"extend"}, str(path))
    default, values = MarkerConfig(), {}
    for key, value in data.items():
        if key in _PHRASE_KINDS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{path}: {key!r} must be a list of phrases (strings), got {value!r}")
            values[key] = (*getattr(default, key), *value) if extend else tuple(value)
        elif type(value) is not type(getattr(default, key)):
            raise ValueError(f"{path}: {key!r} must be {type(getattr(default, key)).__name__}, got {value!r}")
        else:
            values[key] = value
    try:
        return MarkerConfig(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def _find(step_words: tuple[str, ...], phrases: Sequence[str], window: int) -> str | None:
    """The first phrase that starts at one of the first ``window`` words, else None."""
    for phrase in phrases:
        pw = words(phrase)
        for i in range(min(window, len(step_words))):
            if step_words[i:i + len(pw)] == pw:
                return phrase
    return None


@dataclass(frozen=True)
class MarkerClassifier:
    """Rule-based step classifier (LIMOPro's marker rules; see the module docstring)."""

    markers: MarkerConfig = MarkerConfig()

    def label(self, step: str) -> str:
        """The label of one step on its own (no look at its neighbours)."""
        w, m = words(step), self.markers
        if _find(w, m.error_correction, m.window_words):
            return ERROR_CORRECTION
        if _find(w, m.multi_method, m.window_words):
            return MULTI_METHOD
        if _find(w, m.verification, m.window_words):
            return VERIFICATION
        return PROGRESSIVE

    def __call__(self, steps: Sequence[str]) -> list[str]:
        labels = [self.label(s) for s in steps]
        m = self.markers
        if m.label_retracted_step:
            for i in range(1, len(steps)):
                if labels[i] == ERROR_CORRECTION and labels[i - 1] == PROGRESSIVE \
                        and _find(words(steps[i]), m.retraction, m.window_words):
                    labels[i - 1] = ERROR_CORRECTION
        return labels


def is_functional(label: str) -> bool:
    """Whether a label is one of the functional kinds (prunable)."""
    return label in FUNCTIONAL_LABELS
