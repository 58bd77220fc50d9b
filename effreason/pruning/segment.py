"""Split the thinking part of a reasoning trace into steps.

A segmenter returns *consecutive slices* of the thinking text: each segment keeps the whitespace
that follows it, so ``"".join(segments) == thinking`` exactly and pruning is lossless except for
the steps it removes. Classification and display use ``segment.strip()``.

LIMOPro (arXiv 2505.19187) groups 3-4 sentences per step with an LLM. We segment by rule instead:
paragraphs for real R1-style traces (their paragraphs are the model's own step boundaries), and
``;``-terminated units for the embedded lab's traces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

# A paragraph ends at a blank line; the blank line (and any spaces around it) stays with it.
_PARAGRAPH_END = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! or ? followed by whitespace; the whitespace stays with the sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A lab step ends at " ;"; the spaces after it stay with it.
_LAB_STEP_END = re.compile(r";\s*")


class Segmenter(Protocol):
    """Splits thinking text into steps: consecutive slices that re-join to the input exactly."""

    def __call__(self, thinking: str) -> list[str]: ...


def _split_after(text: str, pattern: re.Pattern) -> list[str]:
    """Cut ``text`` after every match of ``pattern`` (the match stays with the piece before it)."""
    pieces, start = [], 0
    for m in pattern.finditer(text):
        if m.end() > start:
            pieces.append(text[start:m.end()])
            start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _merge_blank(segments: list[str]) -> list[str]:
    """Attach whitespace-only pieces to a neighbour, so every step has text and nothing is lost."""
    out: list[str] = []
    pending = ""
    for seg in segments:
        if not seg.strip():
            if out:
                out[-1] += seg
            else:
                pending += seg
            continue
        out.append(pending + seg)
        pending = ""
    if pending:
        out.append(pending)
    return out


@dataclass(frozen=True)
class ParagraphSegmenter:
    """One step per paragraph (blank-line separated); long paragraphs become groups of sentences.

    Args:
        max_paragraph_chars: a paragraph longer than this is split into sentence groups.
        sentences_per_step: sentences per group when a paragraph is split (the paper's 3-4).
    """

    max_paragraph_chars: int = 1200
    sentences_per_step: int = 4

    def __post_init__(self):
        if self.max_paragraph_chars < 1 or self.sentences_per_step < 1:
            raise ValueError("max_paragraph_chars and sentences_per_step must be >= 1 "
                             f"(got {self.max_paragraph_chars}, {self.sentences_per_step})")

    def __call__(self, thinking: str) -> list[str]:
        segments: list[str] = []
        for paragraph in _split_after(thinking, _PARAGRAPH_END):
            if len(paragraph.strip()) <= self.max_paragraph_chars:
                segments.append(paragraph)
                continue
            sentences = _split_after(paragraph, _SENTENCE_END)
            k = self.sentences_per_step
            segments.extend("".join(sentences[i:i + k]) for i in range(0, len(sentences), k))
        return _merge_blank(segments)


@dataclass(frozen=True)
class LabSegmenter:
    """One step per ``;``-terminated unit: the embedded lab's format (``effreason.lab.traces``).

    ``wait , that is wrong . s2 6 - 3 = 3 ;`` and ``... . yes ;`` are single units: a ``.`` does not
    end a step, so a correction or a check stays one step, as the lab generator labels them.
    """

    def __call__(self, thinking: str) -> list[str]:
        return _merge_blank(_split_after(thinking, _LAB_STEP_END))
