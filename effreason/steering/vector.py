"""The steering-vector artifact: ``steering.safetensors`` (the vector) + ``steering.json`` (what it is).

``steering.json`` holds the layer (``effreason.hidden`` index: 0 = embeddings, ``i`` = after decoder
block ``i``, where the vector is both read and injected), the position rule of the extraction, the
strength ``gamma`` the recipe chose and how (closed form or measured search), ``eps`` and the measured
per-token KL at ``gamma``, the sign (the vector is ``concise - verbose`` and is added with ``+gamma``;
``sign`` records which way lowered the tokens), the layer sweep, the pairs it came from, the model
and tokenizer fingerprints it was built on, and the sha256 of the weights file. Loading it checks
all of that; using it with another model is a one-line error (``check_model``).

    vec = SteeringVector.load("runs/steering-lab/steering")
    vec.check_model(model_path, tokenizer, hidden_size=model.config.hidden_size)
    with steer(model, vec.vector, vec.layer, vec.gamma): model.generate(...)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from effreason.artifacts import model_record  # noqa: F401 (kept importable from here)

FORMAT = "effreason-steering-vector"
VERSION = 1
WEIGHTS_FILE, META_FILE = "steering.safetensors", "steering.json"
POSITION_RULES = ("last", "mean")
LAYER_CONVENTION = ("effreason.hidden indices: 0 = embeddings, i = after decoder block i (before the final norm); "
                    "read and injected at the same module")


class SteeringError(ValueError):
    """A steering folder that cannot be used (missing, corrupt, or built for another model)."""


@dataclass
class SteeringVector:
    """A direction in the residual stream at one layer, with the strength to add it with.

    Attributes:
        vector: ``(hidden_size,)`` float32, ``mean(concise) - mean(verbose)`` states.
        layer: where it is read and injected.
        gamma: the strength ``effreason eval --steering`` uses unless ``--gamma`` says otherwise.
        sign: +1 when adding ``+gamma * vector`` lowered the tokens on the dev set (the expected case),
            -1 when the opposite did; ``gamma`` already carries it (it is negative then).
        position: how states were pooled per example ("last": the final token, ASC; "mean": the completion's tokens).
        model: fingerprints of what it was built on (name, path, weights, adapter, tokenizer, num_layers, hidden_size).
        info: the rest of the JSON (eps, KL figures, closed form, sweep, pairs), kept as written.
    """

    vector: torch.Tensor = field(repr=False)
    layer: int
    gamma: float
    sign: int = 1
    position: str = "last"
    model: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.vector.shape[-1])

    def check_model(self, model_path: str | None, tokenizer: Any, *, depth: int | None = None,
                    hidden_size: int | None = None, adapter: str | None = None) -> None:
        """Refuse a model other than the one the vector was extracted from (weights, adapter, tokenizer, shape).

        Raises:
            SteeringError: naming what differs and what to do.
        """
        from effreason.artifacts import check_built_for

        if model_path is not None and not isinstance(model_path, (str, os.PathLike)):
            raise SteeringError(f"check_model takes the model's folder or hub id, not a {type(model_path).__name__}")
        check_built_for(self.model, model_path, tokenizer, error=SteeringError, what="steering vector",
                        adapter=adapter, depth=depth, hidden_size=hidden_size,
                        rebuild="extract one for this model (and adapter) with recipes/steering.py --model_name_or_path ...")
        if depth is not None and self.layer > depth:
            raise SteeringError(f"this steering vector acts at layer {self.layer} and the model has {depth} layers")

    # --- disk ---------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``steering.safetensors`` + ``steering.json`` into ``folder``."""
        from safetensors.torch import save

        from effreason.jsonl import atomic_write, write_json
        from effreason.outputs import file_sha256

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / WEIGHTS_FILE, "wb") as f:
            f.write(save({"vector": self.vector.detach().float().cpu().contiguous()}))
        meta = {"format": FORMAT, "version": VERSION, "layer": self.layer, "layer_convention": LAYER_CONVENTION,
                "position": self.position, "injection": "every generated position and the last prompt position",
                "gamma": self.gamma, "sign": self.sign, "vector_norm": float(self.vector.norm()),
                "hidden_size": self.hidden_size, "model": self.model, **self.info,
                "files": {WEIGHTS_FILE: file_sha256(folder / WEIGHTS_FILE)}}
        write_json(folder / META_FILE, meta)

    @classmethod
    def load(cls, folder: str | Path) -> SteeringVector:
        """Read a steering folder, checking that it is complete and intact.

        Raises:
            SteeringError: a missing folder or file, malformed JSON, a missing key, a bad value, or weights whose
                sha256 differs from the one recorded.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from effreason.artifacts import read_artifact

        meta, weights_path = read_artifact(
            folder, meta_file=META_FILE, weights_file=WEIGHTS_FILE, fmt=FORMAT, version=VERSION,
            required=("version", "layer", "position", "gamma", "sign", "model", "files"), error=SteeringError,
            what="steering vector", made_by="recipes/steering.py into <output_dir>/steering")
        meta_path = Path(folder) / META_FILE
        bad = [k for k, ok in (("layer", _is_int(meta["layer"]) and meta["layer"] >= 0),
                               ("gamma", _is_number(meta["gamma"])), ("sign", meta["sign"] in (1, -1)),
                               ("position", meta["position"] in POSITION_RULES),
                               ("model", isinstance(meta["model"], dict)))
               if not ok]
        if bad:
            raise SteeringError(f"{meta_path}: bad value for {', '.join(f'{k}={meta[k]!r}' for k in bad)}; rebuild it")
        try:
            tensors = load_file(str(weights_path))
        except (SafetensorError, OSError) as e:
            raise SteeringError(f"{weights_path}: unreadable ({e}); rebuild it") from None
        vector = tensors.get("vector")
        if vector is None or vector.dim() != 1 or not torch.isfinite(vector).all():
            raise SteeringError(f"{weights_path}: no finite 1-d tensor 'vector'; rebuild it")
        known = {"format", "version", "layer", "layer_convention", "position", "injection", "gamma", "sign",
                 "vector_norm", "hidden_size", "model", "files"}
        return cls(vector.float(), int(meta["layer"]), float(meta["gamma"]), int(meta["sign"]), meta["position"],
                   meta["model"], {k: v for k, v in meta.items() if k not in known})


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
