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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effreason.early_exit.conformal import Thresholds
from effreason.outputs import tokenizer_fingerprint

FORMAT = "effreason-exit-probe"
VERSION = 1
WEIGHTS_FILE, META_FILE = "probe.safetensors", "probe.json"
HIDDEN = (256, 64)


class ProbeError(ValueError):
    """A probe folder that cannot be used (missing, corrupt, or built for another model)."""


def build_mlp(in_dim: int, hidden: Sequence[int] = HIDDEN) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.ReLU()]
        prev = width
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


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
        adapter_now = model_fingerprint(adapter) if adapter else None
        if built.get("adapter") != adapter_now:
            raise ProbeError(f"this probe was built for model {built.get('name')!r} with adapter "
                             f"{built.get('adapter')}, and the model now has adapter {adapter_now} ({adapter}): the "
                             "hidden states differ; train a probe for this model and adapter")
        now = {"weights": model_fingerprint(model_path) if model_path else None,
               "tokenizer": tokenizer_fingerprint(tokenizer)}
        if depth is not None:
            now["num_layers"] = depth
        if hidden_size is not None:
            now["hidden_size"] = hidden_size
        diff = [k for k, v in now.items() if v is not None and built.get(k) is not None and built.get(k) != v]
        if diff:
            raise ProbeError(f"this probe was built for model {built.get('name')!r} and does not fit {model_path}: "
                             f"{', '.join(f'{k} {built.get(k)} != {now[k]}' for k in diff)}; train a probe for "
                             "this model with recipes/early_exit.py --model_name_or_path ...")

    # --- disk ---------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``probe.safetensors`` + ``probe.json`` into ``folder`` (an existing, empty or own folder)."""
        from safetensors.torch import save

        from effreason.jsonl import atomic_write, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"mlp.{k}": v.detach().cpu().contiguous() for k, v in self.mlp.state_dict().items()}
        tensors.update({"scaler.mean": self.mean.cpu().contiguous(), "scaler.scale": self.scale.cpu().contiguous()})
        with atomic_write(folder / WEIGHTS_FILE, "wb") as f:
            f.write(save(tensors))
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
        from safetensors import SafetensorError
        from safetensors.torch import load_file

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
        try:
            tensors = load_file(str(weights_path), device=str(device))
        except (SafetensorError, OSError) as e:
            raise ProbeError(f"{weights_path}: unreadable ({e})") from None
        try:
            mlp = build_mlp(int(meta["feature_dim"]), [int(h) for h in meta["hidden"]]).to(device)
            mlp.load_state_dict({k[len("mlp."):]: v for k, v in tensors.items() if k.startswith("mlp.")})
            mean, scale = tensors["scaler.mean"], tensors["scaler.scale"]
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            first = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
            raise ProbeError(f"{weights_path}: its tensors do not fit {META_FILE} (feature_dim, hidden): {first[:160]}; "
                             "the probe folder is damaged: rebuild it") from None
        mlp.eval()
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


# --- training ---------------------------------------------------------------------------------------


def split_groups(groups: Sequence[Any], fraction: float, seed: int) -> np.ndarray:
    """A boolean mask choosing about ``fraction`` of the distinct groups (problems), all their events together."""
    unique = sorted(set(groups), key=str)
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(unique), size=max(1, round(fraction * len(unique))), replace=False).tolist()) \
        if len(unique) > 1 else set()
    picked = {unique[i] for i in chosen}
    return np.array([g in picked for g in groups], dtype=bool)


def train_mlp(features: torch.Tensor, labels: np.ndarray, groups: Sequence[Any], *, seed: int = 0,
              validation_fraction: float = 0.15, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
              batch_size: int = 256, max_epochs: int = 200, patience: int = 10) -> tuple[nn.Sequential, torch.Tensor,
                                                                                        torch.Tensor, dict]:
    """Train the MLP with class-balanced BCE and early stopping on a by-problem validation split.

    Returns:
        the MLP (best validation loss), the scaler mean and scale, and training metrics.
    """
    labels = np.asarray(labels).astype(np.float32)
    if len(set(labels.tolist())) < 2:
        raise ValueError(f"the training events are all of one class ({int(labels[0]) if len(labels) else '-'}): "
                         "a probe needs events where exiting is right and where it is wrong; use more problems "
                         "or other cues")
    torch.manual_seed(seed)
    x = features.float()
    val = split_groups(groups, validation_fraction, seed)
    train = ~val
    if val.sum() == 0 or train.sum() == 0:
        raise ValueError(f"too few problems ({len(set(groups))}) for a training/validation split by problem")
    mean = x[torch.from_numpy(train)].mean(0)
    scale = x[torch.from_numpy(train)].std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    y = torch.from_numpy(labels)
    n, n1 = float(train.sum()), float(labels[train].sum())
    w1, w0 = n / (2 * max(n1, 1.0)), n / (2 * max(n - n1, 1.0))
    weights = torch.where(y > 0.5, torch.tensor(w1), torch.tensor(w0))
    mlp = build_mlp(x.shape[1])
    opt = torch.optim.Adam(mlp.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    tr_idx, va_idx = torch.from_numpy(np.flatnonzero(train)), torch.from_numpy(np.flatnonzero(val))
    gen = torch.Generator().manual_seed(seed)

    def val_loss() -> float:
        mlp.eval()
        with torch.no_grad():
            out = mlp(z[va_idx]).squeeze(-1)
            loss = (loss_fn(out, y[va_idx]) * weights[va_idx]).sum() / weights[va_idx].sum()
        mlp.train()
        return float(loss)

    best, best_state, best_epoch, bad = math.inf, None, 0, 0
    for epoch in range(max_epochs):
        perm = tr_idx[torch.randperm(len(tr_idx), generator=gen)]
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            out = mlp(z[idx]).squeeze(-1)
            loss = (loss_fn(out, y[idx]) * weights[idx]).sum() / weights[idx].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        current = val_loss()
        if current < best - 1e-6:
            best, best_epoch, bad = current, epoch + 1, 0
            best_state = {k: v.clone() for k, v in mlp.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is None:
        raise ValueError("the probe's validation loss was never finite (NaN or inf features?); check the features "
                         "or lower probe_learning_rate")
    mlp.load_state_dict(best_state)
    mlp.eval()
    with torch.no_grad():
        p = torch.sigmoid(mlp(z).squeeze(-1)).numpy()
    acc = lambda mask: float(((p[mask] > 0.5) == (labels[mask] > 0.5)).mean())  # noqa: E731
    bal = lambda mask: float(np.mean([((p[mask & (labels == c)] > 0.5) == c).mean()  # noqa: E731
                                      for c in (0, 1) if (mask & (labels == c)).any()]))
    metrics = {"events": int(len(labels)), "train_events": int(train.sum()), "validation_events": int(val.sum()),
               "validation_problems": int(len({g for g, v in zip(groups, val, strict=True) if v})),
               "positive_share": float(labels.mean()), "best_epoch": best_epoch, "epochs_run": epoch + 1,
               "validation_loss": best, "train_accuracy": acc(train), "validation_accuracy": acc(val),
               "validation_balanced_accuracy": bal(val)}
    return mlp, mean, scale, metrics
