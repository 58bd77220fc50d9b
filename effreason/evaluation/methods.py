"""Generation-time methods as options of ``effreason eval`` (early-exit probe, steering, thinking-stop...).

A method is any object with the ``GenerationMethod`` shape: it adds its own command-line options,
says from the parsed arguments whether it is on (and with which settings, which go into the run's
config and its resume check), and, when on, changes how the HF backend generates by returning new
``GenerationHooks``: a wrapped model (forward hooks for steering vectors), extra logits processors
(forcing ``</think>``), or stopping criteria. Nothing here implements a method.

Adding one: write a module that defines ``METHOD = MyMethod()`` and list it in ``METHOD_MODULES``
(one line, like ``effreason.cli.SUBCOMMANDS``), or call ``register_method`` before building the parser
(tests and plugins). Methods that only make sense with transformers say ``backends = ("hf",)``;
``effreason eval`` refuses them with ``--backend vllm``.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

#: name -> module defining ``METHOD`` (imported only when the eval parser is built).
METHOD_MODULES: dict[str, str] = {}

_REGISTERED: dict[str, GenerationMethod] = {}


@dataclass
class GenerationHooks:
    """What generation runs with: the model plus transformers ``LogitsProcessor`` / ``StoppingCriteria``."""

    model: Any
    logits_processors: list = field(default_factory=list)
    stopping_criteria: list = field(default_factory=list)


@runtime_checkable
class GenerationMethod(Protocol):
    """The shape of a generation-time method."""

    name: str
    backends: tuple[str, ...]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this method's options (``--probe PATH``, ...) to the eval parser."""

    def settings(self, args: argparse.Namespace) -> dict | None:
        """The method's resolved settings if the arguments turn it on, else ``None``."""

    def apply(self, hooks: GenerationHooks, tokenizer: Any, settings: dict) -> GenerationHooks:
        """Return the hooks to generate with (wrap the model, add processors); do not mutate ``hooks``."""


def register_method(method: GenerationMethod) -> None:
    """Make a method available to ``effreason eval`` (its options appear in the parser)."""
    if not isinstance(method, GenerationMethod):
        raise TypeError(f"{method!r} lacks the GenerationMethod attributes (name, backends, add_arguments, ...)")
    _REGISTERED[method.name] = method


def unregister_method(name: str) -> None:
    """Remove a registered method (tests)."""
    _REGISTERED.pop(name, None)


def available_methods() -> dict[str, GenerationMethod]:
    """Methods from ``METHOD_MODULES`` and ``register_method``, by name."""
    methods = {}
    for name, module in METHOD_MODULES.items():
        methods[name] = importlib.import_module(module).METHOD
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


def check_backend(methods: dict[str, dict], backend: str) -> None:
    """Refuse methods the chosen backend cannot run."""
    available = available_methods()
    for name in methods:
        if backend not in available[name].backends:
            raise ValueError(
                f"generation method {name!r} runs on backends {list(available[name].backends)}, "
                f"not {backend!r}; use --backend {available[name].backends[0]}"
            )


def apply_methods(hooks: GenerationHooks, tokenizer: Any, methods: dict[str, dict]) -> GenerationHooks:
    """Apply each active method in name order (deterministic) and return the final hooks."""
    available = available_methods()
    hooks = replace(hooks, logits_processors=list(hooks.logits_processors),
                    stopping_criteria=list(hooks.stopping_criteria))
    for name in sorted(methods):
        hooks = available[name].apply(hooks, tokenizer, methods[name])
    return hooks
