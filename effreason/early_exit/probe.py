"""The exit probe: a small MLP on cue-token hidden states, its calibration, and its artifact on disk.

Architecture and training follow LYNX (arXiv 2512.05325): features standardised, an MLP
(256, 64, ReLU) giving ``p = P(exiting here is right)``, class-balanced loss (class weights
``n / (2 n_c)``), early stopping on a validation split. Unlike the reference code (scikit-learn, an
80/20 split over events) the validation split is *by problem*: the events of one trace share most of
their context, and an event-level split would leak.

Artifact (``<output_dir>/probe/``), no pickle:

- ``probe.safetensors``: the MLP's weights and the scaler (``scaler.mean``, ``scaler.scale``);
- ``probe.json``: layers, cues, exit string, answer tokens, the thresholds per delta with their
  calibration counts, training metrics, the model and tokenizer fingerprints it was built on, and the
  sha256 of ``probe.safetensors`` (a corrupt or swapped weights file is refused).

``ExitProbe.load(dir)`` reads it; ``probe.check_model(model_path, tokenizer)`` refuses another model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# build_mlp, split_groups and train_mlp stay importable from here
from effreason.classifier import build_mlp, load_classifier, save_classifier, split_groups, train_mlp  # noqa: F401
from effreason.early_exit.conformal import Thresholds

FORMAT = "effreason-exit-probe"
VERSION = 1
WEIGHTS_FILE, META_FILE = "probe.safetensors", "probe.json"
HIDDEN = (256, 64)  # the MLP of ``effreason.classifier`` (its default)


class ProbeError(ValueError):
    """A probe folder that cannot be used (missing, corrupt, or built for another model)."""


def model_fingerprint(model_path: str) -> str | None:
    """What identifies the weights the probe reads (``effreason.outputs.weights_fingerprint``)."""
    from effreason.outputs import weights_fingerprint

    return weights_fingerprint(model_path)


@dataclass
class ExitProbe:
    """A trained, calibrated exit probe (see the module docstring)."""

    mlp: nn.Sequential = field(repr=False)
    mean: torch.Tensor = field(repr=False)
    scale: torch.Tensor = field(repr=False)
    layers: list[int]
    cues: list[str]
    exit_string: str
    answer_tokens: int
    thresholds: list[Thresholds]
    model: dict = field(default_factory=dict)  # name, weights fingerprint, tokenizer fingerprint, layers, hidden
    training: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)

    @torch.inference_mode()
    def predict(self, features: torch.Tensor) -> np.ndarray:
        """``p`` (exiting is right) for a ``(N, feature_dim)`` batch."""
        x = (features.float().to(self.mean.device) - self.mean) / self.scale
        return torch.sigmoid(self.mlp(x).squeeze(-1)).double().cpu().numpy()

    def threshold(self, delta: float) -> Thresholds:
        """The calibrated thresholds for ``delta`` (one of the grid the probe was calibrated on)."""
        for t in self.thresholds:
            if math.isclose(t.delta, delta, rel_tol=0, abs_tol=1e-12):
                return t
        grid = ", ".join(f"{t.delta:g}" for t in self.thresholds)
        raise ProbeError(f"the probe has no calibration for delta {delta:g}; it was calibrated for {grid} (for "
                         "another delta run recipes/early_exit.py with it in --deltas, in a new output_dir)")

    @property
    def feature_dim(self) -> int:
        return int(self.mean.numel())

    def check_model(self, model_path: str | None, tokenizer: Any, depth: int | None = None,
                    hidden_size: int | None = None, adapter: str | None = None) -> None:
        """Refuse a model other than the one the probe was built on (weights, adapter, tokenizer, shape).

        Raises:
            ProbeError: naming what differs and what to do.
        """
        built = self.model
        if model_path is not None and not isinstance(model_path, (str, os.PathLike)):
            raise ProbeError(f"check_model takes the model's folder or hub id, not a {type(model_path).__name__} "
                             "(pass None to check the tokenizer and shape only)")
        if model_path is not None:
            from effreason.models import resolve_model_path

            model_path = resolve_model_path(model_path)  # `lab` -> the shipped checkpoint
        if depth is not None and max(self.layers) > depth:
            raise ProbeError(f"this probe reads layer {max(self.layers)} ({META_FILE} layers {self.layers}), and the "
                             f"model has {depth} layers: it is not a probe for this model")
        from effreason.artifacts import check_built_for

        check_built_for(built, model_path, tokenizer, error=ProbeError, what="probe", adapter=adapter, depth=depth,
                        hidden_size=hidden_size, rebuild="train a probe for this model (and adapter) with "
                        "recipes/early_exit.py --model_name_or_path ...")

    # --- disk ---------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``probe.safetensors`` + ``probe.json`` into ``folder`` (an existing, empty or own folder)."""
        from effreason.jsonl import write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_classifier(folder / WEIGHTS_FILE, self.mlp, self.mean, self.scale)
        meta = {
            "format": FORMAT, "version": VERSION, "hidden": list(HIDDEN), "feature_dim": self.feature_dim,
            "layers": self.layers, "layer_convention": "output_hidden_states indices: 0 = embeddings, i = after "
            "decoder block i (read with forward hooks, before the final norm)",
            "cues": self.cues, "exit_string": self.exit_string, "answer_tokens": self.answer_tokens,
            "thresholds": [t.to_json() for t in self.thresholds], "model": self.model,
            "training": self.training, "calibration": self.calibration,
            "files": {WEIGHTS_FILE: _sha256(folder / WEIGHTS_FILE)},
        }
        write_json(folder / META_FILE, meta)

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> ExitProbe:
        """Read a probe folder, checking that it is complete and intact.

        Raises:
            ProbeError: a missing folder or file, malformed JSON, a missing key, or weights whose sha256
                differs from the one recorded.
        """
        from effreason.artifacts import read_artifact

        meta, weights_path = read_artifact(
            folder, meta_file=META_FILE, weights_file=WEIGHTS_FILE, fmt=FORMAT, version=VERSION,
            required=("version", "hidden", "feature_dim", "layers", "cues", "exit_string", "answer_tokens",
                      "thresholds", "model", "files"),
            error=ProbeError, what="exit probe", made_by="recipes/early_exit.py into <output_dir>/probe")
        meta_path = Path(folder) / META_FILE
        if not isinstance(meta["model"], dict) or not isinstance(meta["hidden"], list) \
                or not isinstance(meta["layers"], list):
            raise ProbeError(f"{meta_path}: malformed (model, hidden or layers of the wrong type); rebuild the probe")
        mlp, mean, scale = load_classifier(weights_path, meta["feature_dim"], meta["hidden"], error=ProbeError,
                                           what="probe", meta_file=META_FILE, device=device)
        try:
            thresholds = [Thresholds.from_json(t) for t in meta["thresholds"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ProbeError(f"{meta_path}: malformed thresholds ({e}); rebuild the probe") from None
        return cls(mlp, mean, scale, list(meta["layers"]), list(meta["cues"]), meta["exit_string"],
                   int(meta["answer_tokens"]), thresholds, meta["model"], meta.get("training", {}),
                   meta.get("calibration", {}))


def _sha256(path: Path) -> str:
    from effreason.outputs import file_sha256

    return file_sha256(path)
