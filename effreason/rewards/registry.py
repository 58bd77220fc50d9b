"""Build rewards from config: registry names, ``package.module:name`` or ``path/to/file.py:name``.

A reward spec is a string (a name or path, no parameters) or a dict such as
``{"name": "lgrpo", "alpha": 0.5, "weight": 1.0}``: ``name`` picks the reward, ``weight`` is its
weight in the sum (``build_rewards``), ``log_name`` renames it in the logs (TRL logs
``rewards/<__name__>/mean``), and every other key is a constructor parameter. What a name or path
points to is used this way:

- a class is instantiated with the parameters (a reward with parameters is a picklable instance);
- a function is the reward itself; parameters, if any, are bound to it (``BoundReward``).

Parameters are checked against the signature: an unknown or missing one is a ``ValueError`` that
lists the valid ones, and one of the wrong type for its annotation (``float``, ``int``, ``bool``,
``str``, or one of these or ``None``) is a ``ValueError`` that names it. ``context`` fills parameters a spec leaves out, e.g. ``num_generations`` and
``max_completion_tokens`` from the trainer config, for every reward whose signature takes them.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import math
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from effreason.rewards.correctness import Correctness
from effreason.rewards.format import Format
from effreason.rewards.length import LGRPO, CosineLength, DAPOOverlong, KimiLength, L1Exact, L1Max, TLDRLength

_REGISTRY: dict[str, Callable] = {
    "correctness": Correctness,
    "format": Format,
    "lgrpo": LGRPO,
    "kimi": KimiLength,
    "tldr": TLDRLength,
    "cosine": CosineLength,
    "dapo_overlong": DAPOOverlong,
    "l1_exact": L1Exact,
    "l1_max": L1Max,
}

#: Arguments TRL passes to every reward call: not configuration parameters.
_CALL_ARGS = ("prompts", "completions", "completion_ids")
_SPEC_KEYS = ("name", "weight", "log_name")


def register_reward(name: str) -> Callable[[Callable], Callable]:
    """Decorator that makes a reward class or function buildable by ``name``.

    Example::

        @register_reward("my_reward")
        class MyReward: ...
    """

    def decorator(obj: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name] is not obj:
            raise ValueError(f"a reward named {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = obj
        return obj

    return decorator


def reward_names() -> list[str]:
    """The registered reward names."""
    return sorted(_REGISTRY)


class BoundReward:
    """A reward function with some parameters fixed, and its own log name.

    Picklable when the function is importable (defined at module level).
    """

    def __init__(self, func: Callable, params: Mapping[str, Any], name: str) -> None:
        self.func = func
        self.params = dict(params)
        self.__name__ = name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        return self.func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                         **{**kwargs, **self.params})

    def __repr__(self) -> str:
        func_name = getattr(self.func, "__name__", self.func)
        return f"BoundReward({func_name!r}, {self.params!r}, name={self.__name__!r})"


def _load_file(path_text: str, label: str) -> Any:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ValueError(
            f"{label}: reward file {path_text!r} not found (relative paths start at {Path.cwd()})"
        )
    path = path.resolve()
    # A flat, path-derived module name: loading the same file twice reuses the module, and pickle can
    # find classes defined in it within this process (other processes need a dotted path instead).
    module_name = f"_effreason_user_reward_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{label}: cannot load {path_text!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[module_name]
        raise
    return module


def resolve_reward(target: str, label: str = "reward") -> Callable:
    """The class or function a reward name or path points to (see the module docstring)."""
    if target in _REGISTRY:
        return _REGISTRY[target]
    if ":" not in target:
        raise ValueError(
            f"{label}: unknown reward {target!r}. Valid names: {reward_names()}; or give a user reward as "
            "'package.module:name' or 'path/to/file.py:name'."
        )
    where, _, attr = target.rpartition(":")
    if not where or not attr:
        raise ValueError(
            f"{label}: {target!r} must look like 'package.module:name' or 'path/to/file.py:name'"
        )
    if where.endswith(".py") or "/" in where:
        module = _load_file(where, label)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"{label}: cannot import module {where!r} for reward {target!r}: {e}") from e
    if not hasattr(module, attr):
        defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ValueError(f"{label}: {where!r} has no {attr!r}; it defines {defined}")
    obj = getattr(module, attr)
    if not callable(obj):
        raise ValueError(f"{label}: {target!r} is a {type(obj).__name__}, not a reward class or function")
    return obj


def _check_params(obj: Callable, params: dict[str, Any], label: str, *, is_class: bool) -> None:
    """Reject unknown parameters and (for classes) missing required ones, listing the valid ones."""
    signature = inspect.signature(obj)
    named = {
        p.name: p for p in signature.parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not (not is_class and p.name in _CALL_ARGS)
    }
    open_ended = is_class and any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    valid = ", ".join(named) or "none"
    for key in params:
        if key not in named and not open_ended:
            close = difflib.get_close_matches(key, list(named), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{label}: unknown parameter {key!r}; valid parameters: {valid}{hint}")
    if is_class:
        missing = [k for k, p in named.items() if p.default is p.empty and k not in params]
        if missing:
            raise ValueError(f"{label}: missing required parameter(s) {missing}; valid parameters: {valid}")


def _scalar_type(hint: Any) -> type | None:
    """``float`` / ``int`` / ``bool`` / ``str`` for such an annotation (or ``X | None``), else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_args(hint) else [hint]
    return args[0] if len(args) == 1 and args[0] in (float, int, bool, str) else None


def _check_types(obj: Callable, params: dict[str, Any], label: str) -> None:
    """Reject a parameter whose value does not fit its scalar annotation, naming it (``alpha: "x"``).

    A number written as text for a ``float`` parameter (PyYAML reads ``3e-4`` as a string) is converted
    in ``params``; annotations that cannot be resolved are not checked.
    """
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # noqa: BLE001 - a user reward's annotations may name anything
        return
    expected = {float: "a finite number", int: "an integer", bool: "true or false", str: "a string"}
    for key, value in params.items():
        kind = _scalar_type(hints.get(key))
        if kind is None or value is None:
            continue
        if kind is float and isinstance(value, str):
            try:
                value = params[key] = float(value)
            except ValueError:
                pass
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise ValueError(f"{label}: parameter {key!r} must be {expected[kind]}, got {value!r}")


def _accepts(obj: Callable, key: str) -> bool:
    parameter = inspect.signature(obj).parameters.get(key)
    return parameter is not None and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)


def _split_spec(spec: str | Mapping[str, Any], label: str) -> tuple[str, dict[str, Any], Any, str | None]:
    """``(target, params, weight, log_name)`` of a spec."""
    if isinstance(spec, str):
        return spec, {}, 1.0, None
    if not isinstance(spec, Mapping):
        raise ValueError(f"{label}: a reward spec is a name or a mapping with a 'name' key, got {spec!r}")
    if "name" not in spec:
        raise ValueError(f"{label}: reward spec {dict(spec)!r} has no 'name'; valid names: {reward_names()}")
    params = {str(k): v for k, v in spec.items() if k not in _SPEC_KEYS}
    return str(spec["name"]), params, spec.get("weight", 1.0), spec.get("log_name")


def _build(spec: str | Mapping[str, Any], context: Mapping[str, Any] | None,
           label: str) -> tuple[Callable, Any]:
    target, params, weight, log_name = _split_spec(spec, label)
    label = f"{label} ({target!r})"
    obj = resolve_reward(target, label)
    is_class = inspect.isclass(obj)
    for key, value in (context or {}).items():
        if key not in params and _accepts(obj, key) and not (not is_class and key in _CALL_ARGS):
            params[key] = value
    _check_params(obj, params, label, is_class=is_class)
    _check_types(obj, params, label)
    default_name = target.rpartition(":")[2]
    if is_class:
        try:
            reward = obj(**params)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{label}: {e}") from e
        if log_name is not None or not hasattr(reward, "__name__"):
            reward.__name__ = str(log_name or default_name)
        return reward, weight
    if not params and log_name is None:
        return obj, weight
    if inspect.iscoroutinefunction(obj):  # TRL detects async rewards through partial, not through a wrapper
        if log_name is not None:
            raise ValueError(f"{label}: log_name is not supported for async reward functions")
        return functools.partial(obj, **params), weight
    return BoundReward(obj, params, str(log_name or getattr(obj, "__name__", default_name))), weight


def build_reward(spec: str | Mapping[str, Any], *, context: Mapping[str, Any] | None = None) -> Callable:
    """Build one reward from a spec (a ``weight`` key, if present, is read by ``build_rewards`` only).

    Args:
        spec: ``"lgrpo"``, ``{"name": "lgrpo", "alpha": 0.5}``, ``"my_pkg.rewards:MyReward"`` or
            ``{"name": "rewards/example_user_reward.py:TokenBudget", "budget_tokens": 64}``.
        context: values filled into parameters the spec leaves out, when the reward takes them.

    Raises:
        ValueError: unknown name, unknown or missing parameter, or a path that cannot be loaded.
    """
    return _build(spec, context, "reward")[0]


def _log_name(func: Callable) -> str:
    """The name TRL logs a reward under (it unwraps ``functools.partial``, then reads ``__name__``)."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def _share_correctness(funcs: Sequence[Callable]) -> None:
    """Let all rewards with equal grading settings use one ``Correctness``: one grader, one grading
    pass per batch (``Correctness.grade`` memoises the last batch)."""
    shared: dict[tuple, Correctness] = {}
    for func in funcs:
        if isinstance(func, Correctness):
            shared.setdefault(func.settings(), func)
    for func in funcs:
        inner = getattr(func, "correctness", None)
        if isinstance(inner, Correctness):
            func.correctness = shared.setdefault(inner.settings(), inner)


def build_rewards(specs: Sequence[str | Mapping[str, Any]], *,
                  context: Mapping[str, Any] | None = None) -> tuple[list[Callable], list[float]]:
    """Build the reward functions and weights of a recipe, for ``GRPOTrainer(reward_funcs=...)`` and
    ``GRPOConfig(reward_weights=...)``.

    Args:
        specs: a list such as ``[{"name": "correctness", "weight": 1.0},
            {"name": "lgrpo", "alpha": 0.5, "max_completion_tokens": 256}]`` (YAML lists parse to this).
        context: see ``build_reward``; e.g. ``{"num_generations": 8, "max_completion_tokens": 256}``.

    Raises:
        ValueError: as ``build_reward`` (naming the list entry), a non-numeric weight, or two rewards
            with the same log name.
    """
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Sequence) or not specs:
        raise ValueError(f"rewards must be a non-empty list of reward specs, got {specs!r}")
    funcs: list[Callable] = []
    weights: list[float] = []
    for i, spec in enumerate(specs):
        func, weight = _build(spec, context, f"rewards[{i}]")
        if isinstance(weight, bool) or not isinstance(weight, Real):
            raise ValueError(f"rewards[{i}]: weight must be a number, got {weight!r}")
        funcs.append(func)
        weights.append(float(weight))
    names = [_log_name(f) for f in funcs]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(
                f"rewards[{names.index(name)}] and rewards[{i}] would both log as 'rewards/{name}': give "
                "one a distinct log_name"
            )
    _share_correctness(funcs)
    return funcs, weights
