"""Benchmark loaders: every benchmark becomes a ``datasets.Dataset`` with the same five columns.

Columns, in this order: ``id`` (str), ``problem`` (str), ``prompt`` (chat messages from
``effreason.format.chat_prompt``), ``answer`` (gold answer as a string), ``solution`` (worked
solution, "" when the source has none).

Sources: a local folder laid out as ``<data_dir>/<name>/<split>.jsonl`` (argument ``data_dir``, or
the environment variable ``EFFREASON_DATA_DIR``), otherwise the Hugging Face Hub. Both go through
the same per-benchmark row normaliser, so local and Hub rows come out identical. Bad rows raise
``effreason.jsonl.DataError`` naming the file (or Hub dataset), the line (row) and the field.

Benchmarks whose rows are made in-process rather than read (the lab) give their spec a ``loader``
and live in their own module, listed in ``BENCHMARK_MODULES`` and imported on first lookup, so nothing
here (or in evaluation) imports them; ``register_benchmark`` adds one at run time (plugins, tests).

Example::

    ds = load_benchmark("math500", data_dir="../shared/data/benchmarks", limit=10)
    spec = BENCHMARKS["math500"]  # spec.grading_mode, spec.answer_prefix, spec.max_new_tokens
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effreason.format import MATH_INSTRUCTION, chat_prompt
from effreason.jsonl import DataError, iter_jsonl, require

if TYPE_CHECKING:
    import datasets

DATA_DIR_ENV = "EFFREASON_DATA_DIR"
COLUMNS = ("id", "problem", "prompt", "answer", "solution")
# The local aime25 copy (and math-ai/aime25) carries the instruction inside the problem text.
_AIME25_SUFFIX = "\n" + MATH_INSTRUCTION
#: Text budget forcing appends after ``</think>`` for real tokenizers (the usual boxed-answer phrasing).
MATH_ANSWER_PREFIX = "\n\nThe final answer is \\boxed{"
#: Completion cap of real reasoning models unless told otherwise.
DEFAULT_MAX_NEW_TOKENS = 4096


@dataclass(frozen=True)
class RowSource:
    """Where a row came from, for error messages and ids.

    Attributes:
        path: file path (or Hub dataset id) named in errors.
        line: 1-based line (or row) number named in errors.
        index: 0-based index of the row within its split.
        split: the benchmark split being loaded.
    """

    path: str
    line: int
    index: int
    split: str


RowNormaliser = Callable[[dict, RowSource], dict]
#: Makes the whole Dataset (``COLUMNS``) of a source split, for benchmarks built in-process.
SplitLoader = Callable[[str], "datasets.Dataset"]


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to load and grade one benchmark.

    Attributes:
        name: benchmark name (also the folder name under ``data_dir``).
        splits: our split name -> Hub split name (for the lab benchmarks: the lab split).
        hub_id: Hugging Face dataset id (``None`` for the lab).
        hub_config: Hub configuration name, if any.
        local_paths: our split name -> file path relative to ``data_dir``.
        grading_mode: ``Grader`` mode, "math" or "exact".
        last_number_fallback: whether the grader may fall back to the last number.
        instruction: appended to each problem in the chat prompt.
        normalise: maps a raw row of a local copy or the Hub to ``id``/``problem``/``answer``/``solution``.
        loader: builds the Dataset of a source split itself (instead of reading rows through ``normalise``).
        answer_prefix: the answer lead-in budget forcing appends after ``</think>``.
        max_new_tokens: the default completion cap of ``effreason eval``.
    """

    name: str
    splits: Mapping[str, str]
    hub_id: str | None = None
    hub_config: str | None = None
    local_paths: Mapping[str, str] = field(default_factory=dict)
    grading_mode: str = "math"
    last_number_fallback: bool = False
    instruction: str | None = MATH_INSTRUCTION
    normalise: RowNormaliser | None = None
    loader: SplitLoader | None = None
    answer_prefix: str = MATH_ANSWER_PREFIX
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def __post_init__(self):
        if (self.normalise is None) == (self.loader is None):
            raise ValueError(f"benchmark {self.name!r} needs exactly one of normalise (rows read from files or "
                             "the Hub) or loader (rows made in-process)")


def _text(row: dict, name: str, source: RowSource) -> str:
    return require(row, name, source.path, source.line, str)


def _first_text(row: dict, names: tuple[str, ...], source: RowSource) -> str:
    """The first of ``names`` present in the row (Hub copies name the problem field differently)."""
    for name in names:
        if row.get(name) is not None:
            return _text(row, name, source)
    present = ", ".join(sorted(row)) or "none"
    raise DataError(source.path, source.line, f"missing (fields present: {present})", field=" or ".join(names))


def gold_text(row: dict, name: str, source: RowSource) -> str:
    """The gold answer ``row[name]`` as a string: ``27.0`` -> "27", ``70`` -> "70", strings stripped."""
    value = require(row, name, source.path, source.line)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return str(int(value)) if value.is_integer() else repr(value)
    raise DataError(source.path, source.line, f"expected a non-empty string or a number, got {value!r}",
                    field=name)


def _row_id(row: dict, prefix: str, source: RowSource) -> str:
    value = row.get("id")
    if value is None:
        return f"{prefix}/{source.index}"
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(source.path, source.line, f"expected a string or an integer, got {value!r}", field="id")
    return f"{prefix}/{value}"


def normalise_gsm8k(row: dict, source: RowSource) -> dict:
    """GSM8K (``question``, ``answer`` ending in ``#### n``): gold = n without thousands commas."""
    solution = _text(row, "answer", source)
    head, marker, tail = solution.rpartition("####")
    gold = tail.strip().replace(",", "")
    if not marker or not head.strip() or not gold:
        raise DataError(source.path, source.line, "expected a worked solution ending in '#### <number>'",
                        field="answer")
    return {"id": f"gsm8k/{source.split}/{source.index}", "problem": _text(row, "question", source),
            "answer": gold, "solution": solution}


def normalise_math500(row: dict, source: RowSource) -> dict:
    """MATH-500 (PRM800K split): ``problem``, ``solution``, ``answer``, id = ``unique_id``."""
    return {"id": _text(row, "unique_id", source), "problem": _text(row, "problem", source),
            "answer": gold_text(row, "answer", source),
            "solution": _text(row, "solution", source)}


def normalise_math(row: dict, source: RowSource) -> dict:
    """MATH (Hendrycks et al. 2021; the Hub copy lighteval uses): ``problem``, ``solution`` whose last ``\\boxed{}``
    holds the answer (``answer`` when a copy has one). Its train split is where steering pairs and training
    problems come from; its test split holds MATH-500's problems, so evaluate on ``math500``."""
    from effreason.grading.extract import find_last_boxed

    solution = _text(row, "solution", source)
    answer = gold_text(row, "answer", source) if row.get("answer") is not None else find_last_boxed(solution)
    if not answer:
        raise DataError(source.path, source.line, "no \\boxed{} answer in the solution", field="solution")
    return {"id": f"math/{source.split}/{source.index}", "problem": _text(row, "problem", source),
            "answer": answer.strip(), "solution": solution}


def normalise_aime24(row: dict, source: RowSource) -> dict:
    """AIME 2024 (``id``, ``problem``, ``solution``, ``answer``)."""
    solution = row.get("solution")
    return {"id": _row_id(row, "aime24", source), "problem": _text(row, "problem", source),
            "answer": gold_text(row, "answer", source),
            "solution": _text(row, "solution", source) if solution is not None else ""}


def normalise_aime25(row: dict, source: RowSource) -> dict:
    """AIME 2025 (``prompt`` with the instruction appended, or ``problem``; integer ``answer``)."""
    problem = _first_text(row, ("problem", "prompt"), source)
    if problem.endswith(_AIME25_SUFFIX):
        problem = problem[: -len(_AIME25_SUFFIX)]
    return {"id": _row_id(row, "aime25", source), "problem": problem.strip(),
            "answer": gold_text(row, "answer", source), "solution": ""}


def normalise_amc23(row: dict, source: RowSource) -> dict:
    """AMC 2023 (``id``, ``problem`` or ``question``, float ``answer`` such as 27.0 -> "27")."""
    return {"id": _row_id(row, "amc23", source), "problem": _first_text(row, ("problem", "question"), source),
            "answer": gold_text(row, "answer", source), "solution": ""}


def _spec(name: str, hub_id: str, splits: dict[str, str], normalise: RowNormaliser,
          **kwargs: Any) -> BenchmarkSpec:
    local = {split: f"{name}/{split}.jsonl" for split in splits}
    return BenchmarkSpec(name=name, splits=splits, hub_id=hub_id, local_paths=local, normalise=normalise,
                         **kwargs)


class BenchmarkRegistry(Mapping[str, BenchmarkSpec]):
    """Benchmark name -> spec; specs of ``lazy`` names are imported from their module on first lookup.

    Args:
        specs: specs known now.
        lazy: name -> module whose ``BENCHMARK_SPECS`` holds that name's spec.
    """

    def __init__(self, specs: Iterable[BenchmarkSpec], lazy: Mapping[str, str]):
        self._specs = {spec.name: spec for spec in specs}
        self._lazy = {name: module for name, module in lazy.items() if name not in self._specs}

    def register(self, spec: BenchmarkSpec) -> None:
        self._specs[spec.name] = spec
        self._lazy.pop(spec.name, None)

    def __getitem__(self, name: str) -> BenchmarkSpec:
        if name not in self._specs and name in self._lazy:
            for spec in importlib.import_module(self._lazy[name]).BENCHMARK_SPECS:
                self._specs.setdefault(spec.name, spec)
            if name not in self._specs:
                raise ImportError(f"module {self._lazy[name]} does not define benchmark {name!r}")
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._specs, *(n for n in self._lazy if n not in self._specs)])

    def __len__(self) -> int:
        return len(set(self._specs) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._specs or name in self._lazy


#: Benchmarks defined in their own module (imported on first lookup): name -> module with ``BENCHMARK_SPECS``.
BENCHMARK_MODULES: dict[str, str] = {"lab": "effreason.lab.benchmark", "lab_hard": "effreason.lab.benchmark",
                                     "lab_mixed": "effreason.lab.benchmark"}

BENCHMARKS: BenchmarkRegistry = BenchmarkRegistry(
    (
        _spec("gsm8k", "openai/gsm8k", {"train": "train", "test": "test"}, normalise_gsm8k,
              hub_config="main", last_number_fallback=True),
        _spec("math500", "HuggingFaceH4/MATH-500", {"test": "test"}, normalise_math500),
        _spec("aime24", "HuggingFaceH4/aime_2024", {"test": "train"}, normalise_aime24),
        _spec("aime25", "math-ai/aime25", {"test": "test"}, normalise_aime25),
        _spec("amc23", "math-ai/amc23", {"test": "test"}, normalise_amc23),
        _spec("math", "DigitalLearningGmbH/MATH-lighteval", {"train": "train", "test": "test"}, normalise_math),
    ),
    BENCHMARK_MODULES,
)


def register_benchmark(spec: BenchmarkSpec) -> None:
    """Add (or replace) a benchmark by its name."""
    BENCHMARKS.register(spec)


def _features() -> datasets.Features:
    import datasets

    string = datasets.Value("string")
    message = {"role": string, "content": string}
    return datasets.Features({"id": string, "problem": string, "prompt": datasets.List(message),
                              "answer": string, "solution": string})


def build_dataset(rows: Iterable[dict], instruction: str | None, limit: int | None = None) -> datasets.Dataset:
    """Turn normalised rows into a Dataset with ``COLUMNS`` (adds the chat ``prompt``)."""
    import datasets

    columns: dict[str, list] = {name: [] for name in COLUMNS}
    for row in itertools.islice(rows, limit):
        for name in ("id", "problem", "answer", "solution"):
            columns[name].append(row[name])
        columns["prompt"].append(chat_prompt(row["problem"], instruction=instruction))
    return datasets.Dataset.from_dict(columns, features=_features())


def _local_rows(path: Path, split: str, normalise: RowNormaliser) -> Iterator[dict]:
    for index, (line, row) in enumerate(iter_jsonl(path)):
        yield normalise(row, RowSource(str(path), line, index, split))


def _hub_rows(spec: BenchmarkSpec, split: str) -> Iterator[dict]:
    from effreason.sources import iter_rows

    for where, number, row in iter_rows(spec.hub_id, split=spec.splits[split], subset=spec.hub_config):
        yield spec.normalise(row, RowSource(where, number, number - 1, split))


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")


def load_benchmark(name: str, *, data_dir: str | os.PathLike | None = None, split: str = "test",
                   limit: int | None = None) -> datasets.Dataset:
    """Load a benchmark split as a Dataset with columns ``COLUMNS``.

    Args:
        name: one of ``BENCHMARKS``.
        data_dir: folder with ``<name>/<split>.jsonl`` files; defaults to ``$EFFREASON_DATA_DIR``,
            and to the Hugging Face Hub when neither is set. Ignored by benchmarks with a ``loader`` (the lab).
        split: benchmark split ("test"; gsm8k and lab also "train").
        limit: keep only the first ``limit`` rows.

    Raises:
        ValueError: unknown benchmark or split.
        DataError: a malformed row (names the file, line and field).
    """
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise ValueError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)}")
    if split not in spec.splits:
        raise ValueError(f"benchmark {name!r} has no split {split!r}; splits: {', '.join(spec.splits)}")
    _check_limit(limit)
    if spec.loader is not None:
        data = spec.loader(spec.splits[split])
        return data.select(range(min(limit, len(data)))) if limit is not None else data
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        rows = _hub_rows(spec, split)
    else:
        rows = _local_rows(Path(data_dir) / spec.local_paths[split], split, spec.normalise)
    return build_dataset(rows, spec.instruction, limit)


def load_jsonl_benchmark(path: str | os.PathLike, *, prompt_field: str = "problem", answer_field: str = "answer",
                         id_field: str | None = None, instruction: str | None = None,
                         limit: int | None = None) -> datasets.Dataset:
    """Load any JSONL file of problems as a benchmark Dataset with columns ``COLUMNS``.

    Args:
        path: the JSONL file.
        prompt_field: field holding the problem text.
        answer_field: field holding the gold answer (string or number).
        id_field: field holding a row id; default ``<file stem>/<row index>``.
        instruction: appended to each problem in the chat prompt.
        limit: keep only the first ``limit`` rows.

    A string field ``solution``, when present, fills the ``solution`` column.
    """
    _check_limit(limit)
    path = Path(path)

    def normalise(row: dict, source: RowSource) -> dict:
        if id_field is None:
            row_id = f"{path.stem}/{source.index}"
        else:
            row_id = str(require(row, id_field, source.path, source.line, (str, int)))
        solution = row.get("solution")
        return {"id": row_id, "problem": _text(row, prompt_field, source),
                "answer": gold_text(row, answer_field, source),
                "solution": solution if isinstance(solution, str) else ""}

    return build_dataset(_local_rows(path, "test", normalise), instruction, limit)
