"""Cue events: where a reasoning cue ("wait", "hmm", "alternatively") starts in a completion's thinking.

LYNX (arXiv 2512.05325) decides whether to stop thinking at the cues a reasoning model writes when it
re-verifies or restarts. Its reference code finds them as substrings of the decoded text, which
also hits "await", "waiting" and cues written after ``</think>``. Here a cue matches only as a
whole word, case-insensitive (letters, digits and ``_`` are word characters: "await", "waiting" and
"hmmm" are not cues; "Wait," and "(hmm" are), only in the thinking (before the completion's first
``</think>`` token), and a cue of several words matches with any whitespace between them.

Matching works on token ids, never on re-tokenised text. Each id's text piece is what it adds to a
decoded sequence (``decode([anchor, id])`` minus ``decode([anchor])``, so SentencePiece's leading space
survives); the completion's text is the concatenation of its pieces, and a match starting inside
token ``i`` is the event of token ``i`` (the token the probe reads, and where an exit cuts: the cue
and anything before it in that token are dropped). A match counts once the character after it is
known (the next token arrived, or the completion ended), so the same rule finds the same events
while decoding (``CueScanner``) and on a finished completion (``CueMatcher.events``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CUES = ("wait", "hmm", "alternatively")
_WORD = r"[^\W]"  # letters, digits, underscore (unicode-aware)


@dataclass(frozen=True)
class CueEvent:
    """A cue in a completion: the token it starts in, the cue as written, and its character offset."""

    token: int
    cue: str
    char: int


def cue_pattern(cues: Sequence[str]) -> re.Pattern:
    """A case-insensitive whole-word pattern for the cues (longest first; spaces match any whitespace)."""
    words = [c.strip() for c in cues]
    if not words or any(not w for w in words):
        raise ValueError(f"cues must be non-empty words or phrases, got {list(cues)!r}")
    alternatives = "|".join(r"\s+".join(re.escape(part) for part in w.split())
                            for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!{_WORD})(?:{alternatives})(?!{_WORD})", re.IGNORECASE)


class CueMatcher:
    """Finds cue events in completions given as token ids, for one tokenizer."""

    def __init__(self, tokenizer: Any, cues: Sequence[str] = DEFAULT_CUES, end_id: int | None = None):
        self.tokenizer, self.cues = tokenizer, tuple(cues)
        self.pattern = cue_pattern(self.cues)
        self.end_id = end_id
        self.max_chars = max(len(c) for c in self.cues) * 4 + 8  # a match never spans more characters than this
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"]
        self._anchor = anchor[:1]
        self._anchor_text = tokenizer.decode(self._anchor, skip_special_tokens=False) if anchor else ""
        self._pieces: dict[int, str] = {}

    def piece(self, token_id: int) -> str:
        """The text ``token_id`` adds to a decoded sequence (cached)."""
        text = self._pieces.get(token_id)
        if text is None:
            both = self.tokenizer.decode(self._anchor + [token_id], skip_special_tokens=False)
            if self._anchor and both.startswith(self._anchor_text):
                text = both[len(self._anchor_text):]
            else:
                text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._pieces[token_id] = text
        return text

    def thinking_tokens(self, ids: Sequence[int]) -> int:
        """How many leading tokens are thinking: those before the first ``</think>`` (all without one)."""
        ids = list(ids)
        return ids.index(self.end_id) if self.end_id is not None and self.end_id in ids else len(ids)

    def require_end_id(self, what: str = "early exit") -> int:
        """The ``</think>`` token id; without one the thinking cannot be told from the answer: refuse."""
        if self.end_id is None:
            raise ValueError(f"{what} needs </think> to be one token of the model's vocabulary (the thinking ends "
                             "there; cues after it are not events); this tokenizer splits it")
        return self.end_id

    def scanner(self) -> CueScanner:
        """A scanner for one completion being decoded."""
        return CueScanner(self)

    def events(self, ids: Sequence[int]) -> list[CueEvent]:
        """The cue events of a finished completion (its thinking only), in order."""
        scanner = self.scanner()
        limit = self.thinking_tokens(ids)
        found = []
        for token in ids[:limit]:
            found.extend(scanner.push(token))
        found.extend(scanner.finish())
        return found


@dataclass
class CueScanner:
    """Incremental cue finding for one completion: ``push`` each token as it is decoded.

    ``push`` returns the events confirmed by that token (a cue whose following character is now known).
    Stop pushing at ``</think>``; ``finish`` confirms a cue the thinking ended on.
    """

    matcher: CueMatcher
    text: str = ""
    starts: list[int] = field(default_factory=list)  # character offset where each token's piece starts
    scan_from: int = 0
    last_token: int = -1  # the token of the last event found (one event per token, across scans)

    def _token_at(self, char: int) -> int:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:  # the last token starting at or before char
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= char:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def push(self, token_id: int) -> list[CueEvent]:
        self.starts.append(len(self.text))
        self.text += self.matcher.piece(token_id)
        return self._scan(final=False)

    def finish(self) -> list[CueEvent]:
        return self._scan(final=True)

    def _scan(self, *, final: bool) -> list[CueEvent]:
        found = []
        pending = False
        for m in self.matcher.pattern.finditer(self.text, self.scan_from):
            if m.end() == len(self.text) and not final:  # the next character decides whether it is a word
                pending = True
                break
            token = self._token_at(m.start())
            if token != self.last_token:
                found.append(CueEvent(token, m.group(0), m.start()))
                self.last_token = token
            self.scan_from = m.end()
        if not pending:
            self.scan_from = max(self.scan_from, len(self.text) - self.matcher.max_chars)
        return found
