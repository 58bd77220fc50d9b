"""Generation-time methods: their shape, the registry, and the check that a backend can run them.

A method is an object with the ``GenerationMethod`` shape: a ``name``, the backend capabilities it
``requires`` (``effreason.generation.types.Capability``), the ``setting_names`` its settings dict may
hold (checked, with a did-you-mean, when an ``EvalConfig`` is built from a recipe YAML or the CLI),
and ``add_arguments`` / ``settings`` for its ``effreason eval`` options. It then does its work in
one or both of two optional ways:

1. Every step. ``apply(hooks, tokenizer, settings) -> GenerationHooks`` (``HookMethod``) changes how
   the HF backend generates every token: wrap the model (forward hooks for steering vectors,
   hidden-state reads for probes), add transformers logits processors (thinking-stop scaling) or
   stopping criteria. ``vllm_logits(settings, tokenizer) -> VLLMLogits`` (``VLLMLogitsMethod``) is the vLLM
   form of a logits change: V1 engine logits processor classes plus the ``SamplingParams.extra_args``
   that switch them on. Such a method requires ``LOGITS_PROCESSORS`` (or ``RESIDUAL_HOOKS`` /
   ``HIDDEN_STATES``) and runs on the backends whose hook it implements (``STEP_HOOKS``). A method that
   changes the model itself on vLLM (a steering vector) gives ``vllm_engine(settings, model_path) -> dict``
   (``VLLMEngineMethod``): the ``vllm.LLM`` arguments that start the engine with its out-of-tree model.
2. ``post_processor(backend, settings) -> step`` (``RolloutMethod``): a callable, built once per run,
   that takes the chunk's ``Rollout`` objects after the base generation and returns the rollouts to
   grade: cut a completion, append forced tokens, continue it with ``backend.generate`` from the
   token ids (``CONTINUE_FROM_IDS``), replace it or add variant rows. What it did goes into
   ``Rollout.info[method name]``, written to samples.jsonl as ``method_info``.
3. ``sampler(backend, settings) -> sample`` (``SamplerMethod``): draws the base samples itself, in
   place of ``backend.generate``: s1 (``effreason.generation.s1``) generates round by round within its
   budget, short-m@k and first-finish (``effreason.generation.parallel``) stop samples early through
   ``backend.generate_short_m`` (``STOP_SAMPLES``). At most one per run; post-processors run after it.

Worked example: budget forcing (s1), ``effreason.generation.budget_forcing``. It requires only
``CONTINUE_FROM_IDS``, so both backends run it. Its step, for each base rollout and each budget,
keeps the completion when it fits the budget, or cuts it after ``budget`` tokens, appends
``</think>`` + the answer lead-in, and continues ``budget_answer_tokens`` tokens in one batched
``backend.generate`` call; each variant records ``{"budget_forcing": {"forced_at": N}}``::

    class BudgetForcing:
        name = "budget_forcing"
        requires = frozenset({Capability.CONTINUE_FROM_IDS})
        setting_names = frozenset({"budgets", "answer_prefix", "budget_answer_tokens"})

        def post_processor(self, backend, settings):
            forced = forced_ids(backend.tokenizer, settings["answer_prefix"])
            return lambda rollouts: rollouts + force_budgets(backend, rollouts, forced, ...)

A logits-processor method is as short (``tests/test_eval_methods.py``)::

    class BanMethod:
        name, requires, setting_names = "ban", frozenset({Capability.LOGITS_PROCESSORS}), frozenset({"token_id"})

        def add_arguments(self, parser):
            parser.add_argument("--ban-token", type=int)

        def settings(self, args):
            return None if args.ban_token is None else {"token_id": args.ban_token}

        def apply(self, hooks, tokenizer, settings):
            return replace(hooks, logits_processors=[*hooks.logits_processors, BanToken(settings["token_id"])])

Adding one: write a module that defines ``METHOD = MyMethod()`` and list it in ``METHOD_MODULES``
(one line), or call ``register_method`` before building the parser (tests and plugins). Settings reach
a run from its CLI options (``settings``) or from a recipe: ``EvalConfig(methods={"name": {...}})``.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from effreason.generation.types import Capability, Generation

#: name -> module defining ``METHOD`` (imported when a config is validated or the eval parser is built).
METHOD_MODULES: dict[str, str] = {
    "budget_forcing": "effreason.generation.budget_forcing",
    "s1": "effreason.generation.s1",
    "thinking_stop": "effreason.generation.thinking_stop",
    "short_m_at_k": "effreason.generation.parallel",
    "first_finish": "effreason.generation.parallel:FIRST_FINISH_METHOD",
    "early_exit": "effreason.early_exit.method",
    "steering": "effreason.steering.method",
    "adapter_router": "effreason.adapters.method",
}

_REGISTERED: dict[str, GenerationMethod] = {}


@dataclass
class GenerationHooks:
    """What HF generation runs with: the model plus transformers ``LogitsProcessor`` / ``StoppingCriteria``."""

    model: Any
    logits_processors: list = field(default_factory=list)
    stopping_criteria: list = field(default_factory=list)


@dataclass
class Rollout:
    """One completion of one prompt on its way through the methods' post-processing steps.

    Attributes:
        prompt_ids: the prompt the completion continues.
        gen: the completion (ids after the prompt).
        seed: the sampling seed of the base completion; continuations derive theirs from it.
        origin: what the caller attaches to find the row again (the runner: problem and sample); steps copy it.
        budget: the thinking budget of a budget-forcing variant, ``None`` for the base completion.
        forced: whether a step cut the completion and forced tokens into it.
        new_tokens: tokens generated for this rollout (0 for a variant that reuses its base as is).
        info: method name -> what it did to this rollout (samples.jsonl ``method_info``).
    """

    prompt_ids: list[int]
    gen: Generation
    seed: int
    origin: Any = None
    budget: int | None = None
    forced: bool = False
    new_tokens: int = 0
    info: dict[str, dict] = field(default_factory=dict)


RolloutStep = Callable[[list[Rollout]], list[Rollout]]
#: ``(prompt_ids, n, max_new_tokens, seeds) -> per prompt, n (generation, method_info, tokens generated)``.
#: A function with ``takes_messages = True`` is also given ``messages=`` (each prompt's chat messages) and
#: ``render=`` (messages -> prompt ids, rendered as the run renders its prompts), to generate from a variant
#: of a prompt (the routed adapter's bucket instruction).
SampleFn = Callable[[list[list[int]], int, int, list[int]], list[list[tuple[Generation, dict, int]]]]


@dataclass(frozen=True)
class VLLMLogits:
    """What a method runs at every step inside vLLM's V1 engine.

    Attributes:
        processors: subclasses of ``vllm.v1.sample.logits_processor.LogitsProcessor`` (or their
            ``"module:Class"`` names) the engine is started with; they act only on requests whose
            ``SamplingParams.extra_args`` switch them on.
        extra_args: merged into every request's ``SamplingParams.extra_args`` (the method's settings).
    """

    processors: tuple[type | str, ...]
    extra_args: dict = field(default_factory=dict)


@runtime_checkable
class GenerationMethod(Protocol):
    """The shape every method has (see the module docstring)."""

    name: str
    requires: frozenset[Capability]
    setting_names: frozenset[str]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this method's options (``--probe PATH``, ...) to the eval parser."""

    def settings(self, args: argparse.Namespace) -> dict | None:
        """The method's resolved settings if the arguments turn it on, else ``None``."""


@runtime_checkable
class HookMethod(Protocol):
    """A method that changes every generation step on the HF backend."""

    def apply(self, hooks: GenerationHooks, tokenizer: Any, settings: dict) -> GenerationHooks:
        """Return the hooks to generate with (wrap the model, add processors); do not mutate ``hooks``."""


@runtime_checkable
class VLLMLogitsMethod(Protocol):
    """A method whose per-step logits change also runs in vLLM (its ``apply`` is the HF side)."""

    def vllm_logits(self, settings: dict, tokenizer: Any) -> VLLMLogits:
        """The vLLM logits processor classes and the per-request ``extra_args`` that switch them on."""


@runtime_checkable
class VLLMEngineMethod(Protocol):
    """A method that changes the model itself on vLLM (a steering vector's out-of-tree model); its ``apply`` is the
    HF side. The engine is started with it, so it holds for every request of that engine."""

    def vllm_engine(self, settings: dict, model_path: str) -> dict:
        """``vllm.LLM`` keyword arguments (``hf_overrides`` selecting a registered architecture, ...)."""


@runtime_checkable
class RolloutMethod(Protocol):
    """A method that post-processes generated rollouts through the backend (cut, force, continue)."""

    def post_processor(self, backend: Any, settings: dict) -> RolloutStep:
        """Build, once per run, the step applied to each chunk's rollouts."""


@runtime_checkable
class SamplerMethod(Protocol):
    """A method that draws the base samples itself (s1's rounds, short-m@k's stopped samples); one per run."""

    def sampler(self, backend: Any, settings: dict) -> SampleFn:
        """Build, once per run, the function that replaces ``backend.generate`` for the base samples."""


def register_method(method: GenerationMethod) -> None:
    """Make a method available to ``effreason eval`` and ``EvalConfig.methods``."""
    if not isinstance(method, GenerationMethod):
        raise TypeError(f"{method!r} lacks the GenerationMethod attributes (name, requires, setting_names, "
                        "add_arguments, settings)")
    if not isinstance(method, (HookMethod, VLLMLogitsMethod, VLLMEngineMethod, RolloutMethod, SamplerMethod)):
        raise TypeError(f"method {method.name!r} does nothing: give it apply(), vllm_logits(), post_processor() "
                        "and/or sampler()")
    _REGISTERED[method.name] = method


def unregister_method(name: str) -> None:
    """Remove a registered method (tests)."""
    _REGISTERED.pop(name, None)


def available_methods() -> dict[str, GenerationMethod]:
    """Methods from ``METHOD_MODULES`` and ``register_method``, by name."""
    methods = {}
    for name, where in METHOD_MODULES.items():
        module, _, attr = where.partition(":")
        methods[name] = getattr(importlib.import_module(module), attr or "METHOD")
    methods.update(_REGISTERED)
    return methods


def active_methods(args: argparse.Namespace) -> dict[str, dict]:
    """``{method name: settings}`` for each method the parsed arguments turn on."""
    active = {}
    for name, method in available_methods().items():
        settings = method.settings(args)
        if settings is not None:
            active[name] = settings
    return active


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def validate_methods(methods: Mapping[str, Any]) -> None:
    """Refuse unknown method names and setting keys, naming the closest valid one.

    Raises:
        ValueError: an unknown name or key, or settings that are not a mapping.
    """
    available = available_methods()
    for name, settings in methods.items():
        if name not in available:
            raise ValueError(f"unknown generation method {name!r}{_did_you_mean(name, available)} "
                             f"(known: {', '.join(sorted(available))})")
        if not isinstance(settings, Mapping):
            raise ValueError(f"settings of method {name!r} must be a mapping of setting -> value, got {settings!r}")
        allowed = available[name].setting_names
        for key in settings:
            if key not in allowed:
                raise ValueError(f"method {name!r} has no setting {key!r}{_did_you_mean(key, allowed)} "
                                 f"(settings: {', '.join(sorted(allowed)) or 'none'})")
    for name in sorted(methods):  # a method may name others it cannot run with (``incompatible``: name -> why)
        for other, why in getattr(available[name], "incompatible", {}).items():
            if other in methods:
                raise ValueError(f"methods {name} and {other} cannot run together: {why}")
    samplers = sorted(name for name in methods if isinstance(available[name], SamplerMethod))
    if len(samplers) > 1:
        raise ValueError(f"methods {' and '.join(samplers)} each draw the samples themselves; use one per run")


#: Capabilities a method uses at every step, through each backend's own hook (``STEP_HOOKS``).
STEP_CAPABILITIES = frozenset({Capability.LOGITS_PROCESSORS, Capability.RESIDUAL_HOOKS, Capability.HIDDEN_STATES})
#: backend -> per-step capability -> (the protocol a method needing it implements for that backend, its method name).
STEP_HOOKS: dict[str, dict[Capability, tuple[type, str]]] = {
    "hf": {capability: (HookMethod, "apply") for capability in STEP_CAPABILITIES},
    "vllm": {Capability.LOGITS_PROCESSORS: (VLLMLogitsMethod, "vllm_logits"),
             Capability.RESIDUAL_HOOKS: (VLLMEngineMethod, "vllm_engine")},
}


def _why_not(method: GenerationMethod, backend: str, capabilities: frozenset[Capability]) -> str | None:
    missing = method.requires - capabilities
    if missing:
        return f"it needs {', '.join(sorted(c.value for c in missing))}, which {backend!r} does not support"
    for capability in sorted(method.requires & STEP_CAPABILITIES):
        protocol, hook = STEP_HOOKS[backend][capability]
        if not isinstance(method, protocol):
            return f"it works at every step but has no {hook}() for {backend!r}"
    return None


def check_backend(methods: Iterable[str], backend: str) -> None:
    """Refuse methods the backend cannot run, saying why (the missing capability) and which backend can."""
    from effreason.generation.backends import BACKEND_CAPABILITIES

    available = available_methods()
    for name in methods:
        why = _why_not(available[name], backend, BACKEND_CAPABILITIES[backend])
        if why:
            able = [b for b, caps in BACKEND_CAPABILITIES.items() if _why_not(available[name], b, caps) is None]
            fix = f"use --backend {able[0]}" if able else "no backend can run it yet"
            raise ValueError(f"generation method {name!r} cannot run on backend {backend!r}: {why}; {fix}")


def routes_adapters(methods: Iterable[str]) -> bool:
    """Whether a method of the run chooses the adapter per prompt (``PER_PROMPT_ADAPTER``): the HF backend then
    keeps the adapter unmerged."""
    available = available_methods()
    return any(Capability.PER_PROMPT_ADAPTER in available[name].requires for name in methods)


def vllm_logits(methods: Mapping[str, dict], tokenizer: Any) -> VLLMLogits:
    """The processors and ``extra_args`` of every active ``VLLMLogitsMethod``, in name order."""
    available = available_methods()
    processors: list[type | str] = []
    extra_args: dict = {}
    for name in sorted(methods):
        if isinstance(available[name], VLLMLogitsMethod):
            part = available[name].vllm_logits(methods[name], tokenizer)
            processors.extend(p for p in part.processors if p not in processors)
            clash = set(extra_args) & set(part.extra_args)
            if clash:
                raise ValueError(f"methods set the same vLLM extra_args {sorted(clash)}; rename them in {name!r}")
            extra_args.update(part.extra_args)
    return VLLMLogits(tuple(processors), extra_args)


def vllm_engine_kwargs(methods: Mapping[str, dict], model_path: str) -> dict:
    """The ``vllm.LLM`` arguments of every active ``VLLMEngineMethod`` (at most one may set each argument)."""
    available = available_methods()
    kwargs: dict = {}
    for name in sorted(methods):
        if isinstance(available[name], VLLMEngineMethod):
            part = available[name].vllm_engine(methods[name], model_path)
            clash = set(kwargs) & set(part)
            if clash:
                raise ValueError(f"methods set the same vLLM engine arguments {sorted(clash)}; {name!r} cannot run "
                                 "with the others")
            kwargs.update(part)
    return kwargs


def apply_methods(hooks: GenerationHooks, tokenizer: Any, methods: Mapping[str, dict]) -> GenerationHooks:
    """Apply each active ``HookMethod`` in name order (deterministic) and return the final hooks."""
    available = available_methods()
    hooks = replace(hooks, logits_processors=list(hooks.logits_processors),
                    stopping_criteria=list(hooks.stopping_criteria))
    for name in sorted(methods):
        if isinstance(available[name], HookMethod):
            hooks = available[name].apply(hooks, tokenizer, methods[name])
    return hooks


def sampler(backend: Any, methods: Mapping[str, dict]) -> SampleFn | None:
    """The sample function of the run's ``SamplerMethod`` (``validate_methods`` allows one), or ``None``."""
    available = available_methods()
    for name in sorted(methods):
        if isinstance(available[name], SamplerMethod):
            return available[name].sampler(backend, methods[name])
    return None


def post_processors(backend: Any, methods: Mapping[str, dict]) -> list[RolloutStep]:
    """One step per active ``RolloutMethod``, in name order, except budget forcing, which comes last.

    Budget forcing goes last because its variants cut the final base completion (what any other step made of it).
    """
    available = available_methods()
    order = sorted(methods, key=lambda name: (name == "budget_forcing", name))
    return [available[name].post_processor(backend, methods[name]) for name in order
            if isinstance(available[name], RolloutMethod)]
