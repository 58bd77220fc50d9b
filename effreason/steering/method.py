"""``steering``: the eval's generation method for a steering vector (``--steering DIR [--gamma X]``).

On HF it wraps the model so every ``generate`` runs with ``gamma * v`` added at the vector's layer
(``effreason.steering.inject``: the last prompt position and every generated one; the hook is
removed after each call). On vLLM, which has no steering API, the engine is started with an
out-of-tree model (``effreason.steering.vllm_plugin``, registered through the ``vllm.general_plugins``
entry point) that adds the vector at the same layer and positions; the strength is fixed per engine.
The vector must have been extracted from the evaluated model (weights, adapter, tokenizer fingerprints).

    effreason eval --model lab --benchmark lab --steering runs/steering-lab/steering --output OUT
    effreason eval ... --steering DIR --gamma 0.8        # another strength (signed, in units of the vector)
    recipe YAML:  eval_methods: {steering: {vector: runs/steering-lab/steering, gamma: 0.8}}
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from effreason.generation.types import Capability

NAME = "steering"


def load_vector(settings: dict) -> Any:
    """The settings' ``SteeringVector``, read (and checked) afresh: a small file, and never a stale copy."""
    from effreason.steering.vector import SteeringVector

    return SteeringVector.load(settings["vector"])


class Steering:
    """Add a concise-reasoning direction to the residual stream while generating (ASC, arXiv 2507.04742)."""

    name = NAME
    requires = frozenset({Capability.RESIDUAL_HOOKS})
    setting_names = frozenset({"vector", "gamma", "vector_sha256"})
    incompatible = {"early_exit": "an exit probe reads the hidden states of the model it was trained on, unsteered "
                                  "(on vLLM from an unsteered HF copy of it)"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--steering", metavar="DIR",
                            help="steering vector: a folder from recipes/steering.py (<output_dir>/steering)")
        parser.add_argument("--gamma", type=float, metavar="X",
                            help="steering strength (signed, in units of the vector; default: the recipe's choice)")

    def settings(self, args: argparse.Namespace) -> dict | None:
        folder, gamma = getattr(args, "steering", None), getattr(args, "gamma", None)
        if folder is None:
            if gamma is not None:
                raise ValueError("--gamma is the steering strength: give the vector too, --steering DIR")
            return None
        return {"vector": folder, **({"gamma": gamma} if gamma is not None else {})}

    def check_settings(self, settings: dict, *, samples: int) -> None:
        """Refuse a missing or damaged vector folder, or a strength that is not a finite number, before any model loads."""
        if settings.get("vector") is None:
            raise ValueError("steering needs the setting 'vector' (a folder from recipes/steering.py)")
        gamma = settings.get("gamma")
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float))
                                  or not math.isfinite(gamma)):
            raise ValueError(f"steering gamma must be a finite number, got {gamma!r}")
        from effreason.steering.vector import SteeringVector

        SteeringVector.load(settings["vector"])

    def resolve_settings(self, settings: dict) -> dict:
        """Pin the vector's content hash and the strength used, so a run resumes only with the same ones."""
        from effreason.outputs import file_sha256
        from effreason.steering.vector import META_FILE, SteeringVector

        vec = SteeringVector.load(settings["vector"])
        gamma = settings.get("gamma")
        return {**settings, "gamma": float(vec.gamma if gamma is None else gamma),
                "vector_sha256": file_sha256(Path(settings["vector"]) / META_FILE)}

    def chosen_gamma(self, folder: str) -> float:
        """The strength the recipe chose for a vector folder (the leaderboard's knob is set around it)."""
        return load_vector({"vector": folder}).gamma

    def check_model_source(self, settings: dict, model: str, adapter: str | None, tokenizer: Any) -> None:
        """Refuse, before any model loads, a vector extracted from another model than ``model`` (+ ``adapter``)."""
        from effreason.hidden import model_shape
        from effreason.models import resolve_model_path

        path = resolve_model_path(model)
        depth, hidden = model_shape(path)
        load_vector(settings).check_model(path, tokenizer, depth=depth, hidden_size=hidden, adapter=adapter)

    def apply(self, hooks: Any, tokenizer: Any, settings: dict) -> Any:
        from effreason.steering.inject import SteeredModel

        vec = load_vector(settings)
        gamma = vec.gamma if settings.get("gamma") is None else float(settings["gamma"])
        hidden = getattr(getattr(hooks.model, "config", None), "hidden_size", None)
        if hidden is not None and hidden != vec.hidden_size:
            from effreason.steering.vector import SteeringError

            raise SteeringError(f"the steering vector has {vec.hidden_size} dimensions and the model's residual stream "
                                f"{hidden}: it was extracted from another model")
        return replace(hooks, model=SteeredModel(hooks.model, vec.vector, vec.layer, gamma))

    def vllm_engine(self, settings: dict, model_path: str) -> dict:
        """The ``vllm.LLM`` arguments that start the engine with the steered model (fixed for the engine)."""
        from effreason.steering.vector import WEIGHTS_FILE
        from effreason.steering.vllm_plugin import engine_kwargs

        vec = load_vector(settings)
        gamma = vec.gamma if settings.get("gamma") is None else float(settings["gamma"])
        return engine_kwargs(model_path, str((Path(settings["vector"]) / WEIGHTS_FILE).resolve()), vec.layer, gamma)


METHOD = Steering()
