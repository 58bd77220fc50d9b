"""The router: whether the base model, without the reasoning adapter, answers a query correctly.

"Efficient Reasoning on the Edge" (arXiv 2603.16867) switches its reasoning adapter on per query with a
light "switcher" head; how it is built is not published. Ours:

- **Features**: the base model's residual stream (adapter off) at the last prompt token, at ``layers``
  (``effreason.hidden`` indices, read with the same forward hooks as the early-exit probe), concatenated.
  One forward pass of the prompt, which the base would run anyway to answer.
- **Label**: the base model's own greedy answer to that prompt, graded by the shared grader.
- **Classifier**: a one-hidden-layer MLP (``effreason.classifier``: standardised features, class-balanced
  BCE, early stopping on a validation split by problem) giving ``s = P(the base answers correctly)``.
- **Threshold**: on calibration problems (not the training ones), sorted by ``s``, the lowest threshold
  whose routed set's accuracy has a one-sided Wilson lower bound (at ``confidence``) of at least
  ``target_accuracy``: as many queries to the base as the calibration data allows while the base stays
  accurate on them. ``inf`` (never the base) when no threshold reaches it.

Route: ``s >= threshold`` -> the base alone; else base + adapter.

Artifact (a folder), no pickle: ``router.safetensors`` (MLP and scaler) + ``router.json`` (layers,
threshold, target, confidence, calibration and training figures, the base model's fingerprints, the
sha256 of the weights file). ``Router.load(dir)`` checks it; ``check_model`` refuses another base model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "effreason-adapter-router"
VERSION = 1
WEIGHTS_FILE, META_FILE = "router.safetensors", "router.json"
HIDDEN = (64,)
LAYER_CONVENTION = ("effreason.hidden indices: 0 = embeddings, i = after decoder block i (before the final norm), "
                    "read at the last prompt token with the adapter off")
MADE_BY = "recipes/lora_adapter.py into <output_dir>/router"


class RouterError(ValueError):
    """A router folder that cannot be used (missing, corrupt, or built for another base model)."""


@dataclass
class Router:
    """A trained router with its threshold (see the module docstring)."""

    mlp: nn.Sequential = field(repr=False)
    mean: torch.Tensor = field(repr=False)
    scale: torch.Tensor = field(repr=False)
    layers: list[int]
    threshold: float
    target_accuracy: float
    confidence: float
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)

    @torch.inference_mode()
    def scores(self, features: torch.Tensor) -> np.ndarray:
        """``P(the base answers correctly)`` for ``(N, feature_dim)`` features."""
        x = (features.float().to(self.mean.device) - self.mean) / self.scale
        return torch.sigmoid(self.mlp(x).squeeze(-1)).double().cpu().numpy()

    def to_base(self, scores: np.ndarray) -> np.ndarray:
        """Boolean per query: route to the base alone."""
        return np.asarray(scores) >= self.threshold

    @property
    def feature_dim(self) -> int:
        return int(self.mean.numel())

    def check_model(self, model_path: str | None, tokenizer: Any, *, depth: int | None = None,
                    hidden_size: int | None = None) -> None:
        """Refuse a base model other than the one the router was trained on (weights, tokenizer, shape).

        Raises:
            RouterError: naming what differs.
        """
        from effreason.artifacts import check_built_for

        if depth is not None and max(self.layers) > depth:
            raise RouterError(f"this router reads layer {max(self.layers)} ({META_FILE} layers {self.layers}) and the "
                              f"model has {depth} layers: it is not a router for this model")
        check_built_for(self.model, model_path, tokenizer, error=RouterError, what="router", depth=depth,
                        hidden_size=hidden_size, rebuild="train a router for this base model with "
                        "recipes/lora_adapter.py --model_name_or_path ...")

    # --- disk ---------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``router.safetensors`` + ``router.json`` into ``folder``."""
        from effreason.classifier import save_classifier
        from effreason.jsonl import write_json
        from effreason.outputs import file_sha256

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_classifier(folder / WEIGHTS_FILE, self.mlp, self.mean, self.scale)
        meta = {"format": FORMAT, "version": VERSION, "hidden": list(HIDDEN), "feature_dim": self.feature_dim,
                "layers": self.layers, "layer_convention": LAYER_CONVENTION,
                "threshold": self.threshold if math.isfinite(self.threshold) else None,
                "route": "score >= threshold: the base alone; else base + adapter (threshold null: never the base)",
                "target_accuracy": self.target_accuracy, "confidence": self.confidence, "model": self.model,
                "training": self.training, "calibration": self.calibration,
                "files": {WEIGHTS_FILE: file_sha256(folder / WEIGHTS_FILE)}}
        write_json(folder / META_FILE, meta)

    @classmethod
    def load(cls, folder: str | Path) -> Router:
        """Read a router folder, checking that it is complete and intact.

        Raises:
            RouterError: a missing folder or file, malformed JSON, a missing key or bad value, or weights whose
                sha256 differs from the one recorded.
        """
        from effreason.artifacts import read_artifact
        from effreason.classifier import load_classifier

        meta, weights_path = read_artifact(
            folder, meta_file=META_FILE, weights_file=WEIGHTS_FILE, fmt=FORMAT, version=VERSION,
            required=("version", "hidden", "feature_dim", "layers", "threshold", "target_accuracy", "model", "files"),
            error=RouterError, what="router", made_by=MADE_BY)
        meta_path = Path(folder) / META_FILE
        threshold = meta["threshold"]
        bad = [k for k, ok in (("layers", isinstance(meta["layers"], list) and meta["layers"]
                                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                        for x in meta["layers"])),
                               ("threshold", threshold is None or (isinstance(threshold, (int, float))
                                                                   and not isinstance(threshold, bool))),
                               ("model", isinstance(meta["model"], dict)),
                               ("hidden", isinstance(meta["hidden"], list)))
               if not ok]
        if bad:
            raise RouterError(f"{meta_path}: bad value for {', '.join(bad)}; the router folder is damaged: rebuild it")
        mlp, mean, scale = load_classifier(weights_path, meta["feature_dim"], meta["hidden"], error=RouterError,
                                           what="router", meta_file=META_FILE)
        return cls(mlp, mean.float(), scale.float(), list(meta["layers"]),
                   math.inf if threshold is None else float(threshold), float(meta["target_accuracy"]),
                   float(meta.get("confidence", 0.0)), meta["model"], meta.get("training", {}),
                   meta.get("calibration", {}))


# --- features, training, threshold ---------------------------------------------------------------------


def prompt_features(model: Any, prompt_ids: Sequence[Sequence[int]], layers: Sequence[int], *,
                    max_batch_tokens: int = 16384, pad_id: int = 0) -> torch.Tensor:
    """The base model's states at each prompt's last token, ``(N, len(layers) * hidden)``.

    A PEFT model is read with its adapter off (the router decides before the adapter is chosen).
    """
    from effreason.hidden import features_at

    disable = getattr(model, "disable_adapter", None)
    positions = [[len(ids) - 1] for ids in prompt_ids]
    if callable(disable) and hasattr(model, "peft_config"):
        with disable():
            feats = features_at(model, prompt_ids, positions, layers, max_batch_tokens=max_batch_tokens, pad_id=pad_id)
    else:
        feats = features_at(model, prompt_ids, positions, layers, max_batch_tokens=max_batch_tokens, pad_id=pad_id)
    return torch.cat(feats, dim=0)


def wilson_lower(correct: int, n: int, confidence: float) -> float:
    """One-sided Wilson score lower bound of a binomial proportion (``confidence`` 0 gives ``correct / n``)."""
    if n == 0:
        return 0.0
    p = correct / n
    if confidence <= 0:
        return p
    z = NormalDist().inv_cdf(confidence)
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def choose_threshold(scores: np.ndarray, correct: np.ndarray, *, target_accuracy: float,
                     confidence: float) -> tuple[float, dict]:
    """The lowest threshold whose routed set (``score >= threshold``) has accuracy lower bound >= the target.

    Cuts only between distinct scores. Returns the threshold (``inf``: route nothing to the base) and the
    calibration figures at it: problems, base accuracy, routed share, routed accuracy and its lower bound,
    recall (share of the problems the base answers correctly that are routed to it).
    """
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=bool)
    if not 0 < target_accuracy <= 1 or not 0 <= confidence < 1:
        raise ValueError(f"target_accuracy must be in (0, 1] and confidence in [0, 1), got {target_accuracy}, "
                         f"{confidence}")
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    hits = np.cumsum(c)
    threshold, m = math.inf, 0
    for k in range(len(s)):
        if k + 1 < len(s) and s[k + 1] == s[k]:
            continue  # a cut between equal scores is no threshold
        if wilson_lower(int(hits[k]), k + 1, confidence) >= target_accuracy:
            threshold, m = float(s[k]), k + 1
    n, base_correct = len(s), int(c.sum())
    routed_correct = int(hits[m - 1]) if m else 0
    figures = {"problems": n, "base_accuracy": base_correct / n if n else None, "routed_to_base": m,
               "routed_share": m / n if n else None, "routed_accuracy": routed_correct / m if m else None,
               "routed_accuracy_lower_bound": wilson_lower(routed_correct, m, confidence) if m else None,
               "recall": routed_correct / base_correct if base_correct else None}
    return threshold, figures


def train_router(features: torch.Tensor, correct: Sequence[bool], groups: Sequence[Any], *, seed: int = 0,
                 learning_rate: float = 1e-3, weight_decay: float = 1e-4) -> tuple[nn.Sequential, torch.Tensor,
                                                                                   torch.Tensor, dict]:
    """The router's MLP, scaler and training figures (``effreason.classifier.train_mlp``, hidden ``HIDDEN``)."""
    from effreason.classifier import train_mlp

    return train_mlp(features, np.asarray(correct, dtype=np.float32), groups, seed=seed, learning_rate=learning_rate,
                     weight_decay=weight_decay, hidden=HIDDEN, what="router")
