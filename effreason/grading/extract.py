"""Answer extraction and string normalisation: the one place that finds a final answer in text.

Everything here is linear in the input length: a single tokenising pass for braces (no regex that
can backtrack), ``str.rfind`` for anchors, and a bounded tail window, so hostile completions (10,000
nested braces, megabytes of text) cost milliseconds. Nothing is ever evaluated.

Decisions on lenient or hostile answers (training rewards use the same extractor, so each one is a
reward rule; ``tests/test_grading.py`` tests every one):

- **Unclosed boxes**: a ``\\boxed{`` / ``\\fbox{`` that is still open at the end of the answer
  text means the answer was cut off (or is malformed) inside its box, so the completion has no
  answer ("no_answer"), whatever else the text holds: ``\\boxed{7``, ``the answer is \\boxed{7 + 1``,
  ``\\boxed{3} then \\boxed{4`` and a text ending in a bare ``\\boxed`` are not read.
- **Answers inside thinking** are not answers: the answer text is what follows the last
  ``</think>`` (``effreason.format.split_thinking``), and an answer text that opens a new
  ``<think>`` (never closed, or the last ``</think>`` would follow it) was cut off while thinking,
  so it has no answer either, as a completion whose only thinking block never closed.
- **Several boxes**: the box that closes last is the answer (``\\boxed{7} or \\boxed{8}`` is 8), so
  only the last of several hedged boxes counts. An empty last box (``\\boxed{}``) is no answer; a
  stray ``}`` after a closed box is ignored; ``\\boxed{\\boxed{7}}`` is 7.
- **Digits are ASCII ``0-9`` only.** Python's ``int()`` and regex ``\\d`` accept every Unicode
  decimal digit (``int("1٧") == 17``), so all number patterns here are ASCII-only. Full-width
  (``１７``), Arabic-Indic (``١٧``), mathematical-bold (``𝟏𝟕``) and mixed (``1٧``) digits are
  kept as written: they match only a gold written the same way, never ``17``. Not NFKC: it would
  also rewrite ``3²`` as ``32`` and ``½`` as ``1⁄2``, it leaves Arabic-Indic digits alone (mixed
  scripts would still need a rule), and math-verify (the "math" mode) does not read such digits
  either, so refusing keeps both modes in agreement. Golds and the prompts' ``\\boxed{}`` are ASCII.
- **Numbers**: ``007`` == ``7``, ``7.0`` == ``7``, ``+7`` == ``7``, ``-7`` != ``7``; thousands
  separators only in groups of three (``1,000`` == ``1000``, ``1,00`` != ``100``); integers of
  more than ``_MAX_INT_DIGITS`` digits are compared as written. ``nan`` / ``\\infty`` are text.
- **Anchors** ("answer is") are matched ignoring the case of ASCII letters only.
- **Hedged text**: "the answer is 7 or 8" and ``\\boxed{7\\text{ or }8}`` are read whole and
  match neither 7 nor 8.
"""

from __future__ import annotations

import re
import string

from effreason.format import THINK_START, split_thinking

#: Only the last this many characters of an answer are searched: final answers sit at the end, and
#: the bound keeps extraction fast on runaway completions.
TAIL_WINDOW_CHARS = 100_000

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_TEXT_COMMANDS = ("\\text", "\\textbf", "\\textrm", "\\textit", "\\textnormal", "\\mathrm", "\\mathbf", "\\mbox")

# One token per match: a box command (with the blanks after it), any other backslash escape (a
# backslash and the character after it, so ``\{``, ``\}`` and ``\\`` never count as braces), or a
# brace. No nested quantifiers, so matching is linear.
_BRACE_TOKENS = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*|\\.|[{}]", re.DOTALL)
# Digits are ASCII only (see the module docstring): never ``\d``, which also matches "٧" and "７".
_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")
_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?[0-9]*\.[0-9]+")
# Python refuses int() of longer digit strings (sys.int_info.default_max_str_digits).
_MAX_INT_DIGITS = 4000
_ANSWER_ANCHOR = "answer is"
_GSM8K_ANCHOR = "####"
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
# Lower-cases ASCII letters only, so every index stays valid in the original text: str.lower() can
# lengthen a string ("İ" becomes two characters), which shifted the anchor ("İİ The answer is 17"
# was read as "7").
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _box_spans(text: str) -> tuple[dict[int, int], tuple[int, int] | None, bool]:
    """All closed boxes as ``{content_start: content_end}``, the span of the one closing last, and
    whether a box is still open at the end of ``text`` (a ``\\boxed`` at the very end counts)."""
    depth = 0
    open_boxes: list[tuple[int, int]] = []  # (depth inside the box's brace, content start)
    brace_after_box = -1
    closed: dict[int, int] = {}
    last: tuple[int, int] | None = None
    for match in _BRACE_TOKENS.finditer(text):
        token, pos = match.group(), match.start()
        if token == "{":
            depth += 1
            if pos == brace_after_box:
                open_boxes.append((depth, pos + 1))
        elif token == "}":
            if open_boxes and open_boxes[-1][0] == depth:
                last = (open_boxes.pop()[1], pos)
                closed[last[0]] = pos
            depth = max(depth - 1, 0)
        elif token.startswith(_BOX_COMMANDS):
            end = match.end()
            if end < len(text) and text[end] == "{":
                brace_after_box = end
            elif end == len(text):  # the text ends in "\boxed": cut off before the answer
                return closed, last, True
            else:  # "\boxed 5": a box around one bare token
                run_end = end
                while run_end < len(text) and not text[run_end].isspace() and text[run_end] not in "$\\{}":
                    run_end += 1
                if run_end > end:
                    last = (end, run_end)
                    closed[end] = run_end
    return closed, last, bool(open_boxes)


def find_last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed), or ``None``.

    "Last" means the box that closes last, so in ``\\boxed{\\boxed{1} + 1}`` it is the outer one.
    ``\\boxed 5`` (a box without braces) takes the run of non-blank characters after the command.
    Boxes that fill a box (``\\boxed{\\boxed{5}}``) are unwrapped. Unclosed boxes are ignored here;
    ``extract_from_text`` reads a text with an unclosed box as having no answer.
    """
    closed, last, _ = _box_spans(text)
    return _box_content(text, closed, last)


def _box_content(text: str, closed: dict[int, int], last: tuple[int, int] | None) -> str | None:
    """Content of the box spanning ``last`` (from ``_box_spans``) with boxes that fill it unwrapped."""
    if last is None:
        return None
    start, end = last
    while True:  # unwrap nested boxes; each step looks at new characters only, so linear overall
        while start < end and text[start].isspace():
            start += 1
        command = _BRACE_TOKENS.match(text, start)
        if command is None or not command.group().startswith(_BOX_COMMANDS):
            break
        braced = text.startswith("{", command.end())
        inner_start = command.end() + braced
        inner_end = closed.get(inner_start)
        if inner_end is None or text[inner_end + braced : end].strip():
            break
        start, end = inner_start, inner_end
    return text[start:end]


def _after_anchor(text: str, anchor: str) -> str | None:
    """The rest of the line after the last (case-insensitive) ``anchor``, or the next line if empty."""
    pos = text.translate(_ASCII_LOWER).rfind(anchor)
    if pos < 0:
        return None
    rest = text[pos + len(anchor) :].lstrip(" \t:*")
    line_end = rest.find("\n")
    line = rest if line_end < 0 else rest[:line_end]
    if not line.strip() and line_end >= 0:
        following = rest[line_end:].lstrip()
        next_end = following.find("\n")
        line = following if next_end < 0 else following[:next_end]
    return line.strip() or None


def _first_math_span(text: str) -> str:
    """If ``text`` opens with a math delimiter, its content; otherwise text up to the sentence end."""
    for left, right in _DELIMITERS:
        if text.startswith(left):
            end = text.find(right, len(left))
            if end > 0:
                return text[len(left) : end]
    sentence_end = text.find(". ")
    return text if sentence_end < 0 else text[:sentence_end]


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 (only the last match is wanted)
        pass
    return last.group().rstrip(",") if last is not None else None


def _unwrap_text_commands(text: str) -> str:
    """Replace ``\\text{X}`` (and ``\\mathrm``, ``\\mbox``, ...) by ``X`` anywhere, in one pass."""
    if "\\" not in text:
        return text
    out: list[str] = []
    dropped_braces: list[int] = []  # depths of braces whose closing brace must be dropped
    depth, copied, skip_brace_at = 0, 0, -1
    for match in _BRACE_TOKENS.finditer(text):
        token, pos = match.group(), match.start()
        if token == "{":
            depth += 1
            if pos == skip_brace_at:
                out.append(text[copied:pos])
                copied = pos + 1
                dropped_braces.append(depth)
        elif token == "}":
            if dropped_braces and dropped_braces[-1] == depth:
                dropped_braces.pop()
                out.append(text[copied:pos])
                copied = pos + 1
            depth = max(depth - 1, 0)
        elif token[1:2].isalpha():
            # _BRACE_TOKENS splits "\textbf" as "\t" + "extbf": read the whole command name here.
            name_end = pos + 1
            while name_end < len(text) and text[name_end].isalpha():
                name_end += 1
            if text[pos:name_end] in _TEXT_COMMANDS and text[name_end : name_end + 1] == "{":
                out.append(text[copied:pos])
                copied = name_end
                skip_brace_at = name_end
    out.append(text[copied:])
    return "".join(out)


def clean_answer(answer: str) -> str:
    """Light clean-up of an extracted answer, keeping it valid LaTeX.

    Strips blanks, Markdown bold, ``$`` signs (math delimiters and currency), trailing full stops,
    a ``\\text{}`` wrapper around the whole answer, and thousands separators in plain numbers
    (``1,000``, ``1{,}000``, ``1,\\!000`` become ``1000``).
    """
    text = answer.replace("\\$", "").replace("$", "").strip(" \t\n*")  # "*": Markdown bold
    text = text.rstrip(".").strip()
    for command in _TEXT_COMMANDS:
        if text.startswith(command + "{") and text.endswith("}"):
            inner = text[len(command) + 1 : -1]
            if _unwrap_text_commands(text) == inner:  # the wrapper spans the whole answer
                text = inner.strip()
            break
    number = text.replace("{,}", ",").replace("\\!", "").replace(" ", "")
    if _THOUSANDS.fullmatch(number):
        return number.replace(",", "")
    return text


def extract_from_text(text: str, *, last_number_fallback: bool = False) -> str | None:
    """Final answer of an answer text (thinking already removed); see ``extract_answer``."""
    if THINK_START in text:  # thinking reopened after the last </think>: cut off while thinking
        return None
    text = text[-TAIL_WINDOW_CHARS:]
    closed, last, box_left_open = _box_spans(text)
    if box_left_open:  # cut off (or malformed) inside a box: no answer, see the module docstring
        return None
    candidate = _box_content(text, closed, last)
    if candidate is None:
        after = _after_anchor(text, _ANSWER_ANCHOR)
        candidate = _first_math_span(after) if after is not None else None
    if candidate is None:
        candidate = _after_anchor(text, _GSM8K_ANCHOR)
    if candidate is None and last_number_fallback:
        candidate = _last_number(text)
    if candidate is None:
        return None
    return clean_answer(candidate) or None


def extract_answer(completion: str, *, last_number_fallback: bool = False) -> str | None:
    """Extract the final answer of a completion.

    The thinking block is removed first (``effreason.format.split_thinking``); a completion whose
    thinking never closed has no answer, and so has one whose answer text opens a new ``<think>`` or
    ends inside an unclosed ``\\boxed{``. Then, in order: the last ``\\boxed{...}`` / ``\\fbox{...}``
    (nested braces, also ``\\boxed 5``); the text after the last "answer is" (covers "The answer is
    X" and "final answer is X"); the rest of the line after GSM8K's ``#### n``; and, only with
    ``last_number_fallback``, the last number in the text. The result is cleaned by ``clean_answer``.

    Returns:
        The answer string, or ``None`` when nothing could be extracted (or thinking was truncated).
    """
    answer = split_thinking(completion).answer
    if answer is None:
        return None
    return extract_from_text(answer, last_number_fallback=last_number_fallback)


def _canonical_number(text: str) -> str:
    """Plain integers and decimals in one spelling (``007`` -> ``7``, ``27.0`` -> ``27``)."""
    if len(text) <= _MAX_INT_DIGITS and _INTEGER.fullmatch(text):
        return str(int(text))
    if len(text) <= _MAX_INT_DIGITS and _DECIMAL.fullmatch(text):
        whole, _, frac = text.partition(".")
        frac = frac.rstrip("0")
        sign = "-" if whole.startswith("-") else ""
        whole = _canonical_number(whole.lstrip("+-") or "0")
        number = f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"
        return "0" if number == "-0" else number
    return text


_KEY_REPLACEMENTS = (
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("^{\\circ}", ""), ("^\\circ", ""), ("\\!", ""),
    ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\ ", " "), ("~", " "), ("{,}", ","),
)
# Delimiter sizing commands (\left( -> (), but not \leftarrow or \rightarrow.
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![A-Za-z])")
_BLANKS = re.compile(r"\s+")


def _drop_blank(match: re.Match) -> str:
    """A run of blanks matters only between two letters or digits ("1 2", "\\pi r")."""
    text, start, end = match.string, match.start(), match.end()
    keep = 0 < start and end < len(text) and text[start - 1].isalnum() and text[end].isalnum()
    return " " if keep else ""


def answer_key(answer: str) -> str:
    """Comparison key of an answer: equal keys mean the same answer (a sufficient test only).

    Applies ``clean_answer``, unwraps every ``\\text{}``-like command, drops spacing commands,
    delimiter sizing (``\\left``, ``\\right``), degree signs and blanks that separate nothing,
    maps ``\\dfrac`` to ``\\frac`` and writes plain numbers canonically. Used by "exact" grading
    and as the fast path of "math" grading.
    """
    text = _unwrap_text_commands(clean_answer(answer))
    for old, new in _KEY_REPLACEMENTS:
        text = text.replace(old, new)
    text = _BLANKS.sub(_drop_blank, _SIZING.sub("", text).strip()).rstrip(".")
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    return _canonical_number(text)
