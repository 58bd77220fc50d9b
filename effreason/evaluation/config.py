"""The resolved settings of one ``effreason eval`` run, validated with messages that say how to fix them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from effreason.benchmarks import BENCHMARKS, DEFAULT_MAX_NEW_TOKENS

#: The method whose settings are ``EvalConfig`` fields (``budgets``, ``answer_prefix``, ``budget_answer_tokens``).
BUDGET_FORCING = "budget_forcing"
#: Default sequences per HF ``generate`` call, and prompts per vLLM ``generate`` call (= per resume chunk).
DEFAULT_BATCH_SIZE = {"hf": 64, "vllm": 512}

#: Settings that do not change what is generated or how it is graded: a run may resume with them changed.
NON_RESULT_FIELDS = frozenset({"output", "overwrite", "progress", "baseline", "aes_weights", "data_dir",
                               "grade_workers"})


@dataclass
class EvalConfig:
    """Everything ``effreason eval`` needs; see ``effreason eval --help`` for each option."""

    output: str
    # what to evaluate: a benchmark, a user JSONL of problems, or finished completions
    benchmark: str | None = None
    data: str | None = None
    completions: str | None = None
    split: str = "test"
    data_dir: str | None = None
    limit: int | None = None
    prompt_field: str | None = None
    answer_field: str = "answer"
    id_field: str | None = None
    completion_field: str = "completion"
    instruction: str | None = None
    # the model and how it generates
    model: str | None = None
    adapter: str | None = None
    tokenizer: str | None = None
    backend: str = "hf"
    dtype: str | None = None
    device: str | None = None
    batch_size: int | None = None
    max_model_len: int | None = None
    max_new_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    samples: int = 1
    seed: int = 0
    system_prompt: str | None = None
    chat_template: bool = True
    chat_template_kwargs: dict = field(default_factory=dict)
    methods: dict = field(default_factory=dict)
    # budgets (s1-style forcing)
    budgets: list[int] = field(default_factory=list)
    answer_prefix: str | None = None
    budget_answer_tokens: int = 32
    # grading
    grading: str | None = None
    last_number_fallback: bool | None = None
    grade_timeout_s: float = 5.0
    grade_workers: int = 1
    # reporting
    baseline: str | None = None
    aes_weights: tuple[float, float, float] = (1.0, 3.0, 5.0)
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        sources = [name for name in ("benchmark", "data", "completions") if getattr(self, name)]
        if len(sources) != 1:
            raise ValueError("give exactly one of --benchmark NAME, --data FILE.jsonl or --completions FILE.jsonl"
                             + (f" (got {', '.join('--' + s for s in sources)})" if sources else ""))
        if self.completions is None and not self.model:
            raise ValueError("--model is required to generate (a hub id, a local path, or `lab`); "
                             "to grade existing generations use --completions FILE.jsonl")
        replay = self.completions is not None and "early_exit" in (self.methods or {})
        if self.completions is not None and ((self.model and not replay) or self.budgets):
            raise ValueError("--completions grades finished text: drop --model/--budgets "
                             "(use --tokenizer for token counts; --model goes with --exit-probe, to replay an exit)")
        if self.completions is not None and self.methods and set(self.methods) != {"early_exit"}:
            raise ValueError(f"--completions grades finished text: only --exit-probe replays on it, not "
                             f"{', '.join(sorted(set(self.methods) - {'early_exit'}))}")
        if self.backend not in DEFAULT_BATCH_SIZE:
            raise ValueError(f"--backend must be one of {sorted(DEFAULT_BATCH_SIZE)}, got {self.backend!r}")
        if self.grading not in (None, "math", "exact"):
            raise ValueError(f"--grading must be 'math' or 'exact', got {self.grading!r}")
        if self.samples < 1:
            raise ValueError(f"--samples must be >= 1, got {self.samples}")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("--samples > 1 with greedy decoding gives identical samples; set --temperature > 0")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need --temperature >= 0 and 0 < --top-p <= 1, got {self.temperature}, {self.top_p}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        self._check_methods()
        if any(b < 1 for b in self.budgets) or len(set(self.budgets)) != len(self.budgets):
            raise ValueError(f"--budgets must be distinct positive token counts, got {self.budgets}")
        self.budgets = sorted(self.budgets)
        if self.max_new_tokens is None and self.completions is None:
            spec = BENCHMARKS.get(self.benchmark) if self.benchmark else None
            self.max_new_tokens = spec.max_new_tokens if spec is not None else DEFAULT_MAX_NEW_TOKENS
        s1_budget = (self.methods.get("s1") or {}).get("thinking_budget")
        if isinstance(s1_budget, int) and self.max_new_tokens is not None and s1_budget > self.max_new_tokens:
            raise ValueError(f"s1 thinking budget {s1_budget} exceeds --max-new-tokens {self.max_new_tokens}: raise "
                             "--max-new-tokens or lower --s1-budget")
        if self.budgets and self.budgets[-1] > self.max_new_tokens:
            raise ValueError(f"budget {self.budgets[-1]} exceeds --max-new-tokens {self.max_new_tokens}: budgets cut "
                             "the unbudgeted completion, so raise --max-new-tokens or drop the larger budgets")
        if self.batch_size is None:
            self.batch_size = DEFAULT_BATCH_SIZE[self.backend]
        if self.batch_size < 1 or self.budget_answer_tokens < 1:
            raise ValueError("--batch-size and --budget-answer-tokens must be >= 1")

    def _check_methods(self) -> None:
        """Validate ``methods`` (names, setting keys, backend) and move budget forcing's settings to its fields.

        A recipe may write ``methods: {budget_forcing: {budgets: [...]}}``; the settings then live in the
        ``budgets`` / ``answer_prefix`` / ``budget_answer_tokens`` fields, so a run's saved config and resume
        check are the same whichever way it was asked for.
        """
        from effreason.generation.methods import (
            SamplerMethod,
            available_methods,
            check_backend,
            validate_methods,
        )

        if not isinstance(self.methods, dict):
            raise ValueError(f"methods must be a mapping of method name -> settings, got {self.methods!r}")
        validate_methods(self.methods)
        if BUDGET_FORCING in self.methods:
            self.methods = dict(self.methods)
            defaults = {"budgets": [], "answer_prefix": None, "budget_answer_tokens": 32}
            for key, value in self.methods.pop(BUDGET_FORCING).items():
                current = getattr(self, key)
                if current != defaults[key] and current != value:
                    raise ValueError(f"budget forcing's {key} is given twice, {current!r} as a field and {value!r} "
                                     f"in methods.{BUDGET_FORCING}; keep one")
                setattr(self, key, list(value) if key == "budgets" else value)
        if self.completions is None:
            check_backend(self.method_settings(), self.backend)
        available = available_methods()
        drawn = [name for name in self.methods if isinstance(available[name], SamplerMethod)]
        if drawn and self.budgets:
            raise ValueError(f"--budgets cuts each full completion, but {drawn[0]} draws its own (cut or stopped) "
                             "samples: use one of them per run")
        for name, settings in self.methods.items():
            check = getattr(available[name], "check_settings", None)
            if check is not None:
                check(settings, samples=self.samples)

    def method_settings(self) -> dict[str, dict]:
        """``{method name: settings}`` of every method the run uses, budget forcing included."""
        methods = dict(self.methods)
        if self.budgets:
            methods[BUDGET_FORCING] = {"budgets": list(self.budgets), "answer_prefix": self.answer_prefix,
                                       "budget_answer_tokens": self.budget_answer_tokens}
        return methods

    def to_dict(self) -> dict:
        """All settings, JSON-ready."""
        return asdict(self)

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the interrupted one (everything that changes results)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_RESULT_FIELDS}
