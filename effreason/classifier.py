"""A small MLP classifier on hidden-state features: class-balanced BCE, early stopping by problem.

Shared by the early-exit probe (``effreason.early_exit.probe``, after LYNX, arXiv 2512.05325: an MLP
(256, 64, ReLU) on standardised features) and the adapter router (``effreason.adapters.router``, one
hidden layer). Features are standardised with the training split's mean and scale, classes weighted
``n / (2 n_c)``, and training stops at the best loss on a validation split *by problem* (rows of one
problem share their context: a row-level split would leak).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: The early-exit probe's hidden widths (LYNX).
HIDDEN = (256, 64)


def build_mlp(in_dim: int, hidden: Sequence[int] = HIDDEN) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.ReLU()]
        prev = width
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)



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
              batch_size: int = 256, max_epochs: int = 200, patience: int = 10, hidden: Sequence[int] = HIDDEN,
              what: str = "probe") -> tuple[nn.Sequential, torch.Tensor, torch.Tensor, dict]:
    """Train the MLP with class-balanced BCE and early stopping on a by-problem validation split.

    ``hidden``: the MLP's hidden widths; ``what``: the classifier's name in error messages.

    Returns:
        the MLP (best validation loss), the scaler mean and scale, and training metrics.
    """
    labels = np.asarray(labels).astype(np.float32)
    if len(set(labels.tolist())) < 2:
        raise ValueError(f"the training examples of the {what} are all of one class "
                         f"({int(labels[0]) if len(labels) else '-'}): it needs both; use more problems"
                         + (" or other cues" if what == "probe" else ""))
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
    mlp = build_mlp(x.shape[1], hidden)
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
        raise ValueError(f"the {what}'s validation loss was never finite (NaN or inf features?); check the "
                         "features or lower its learning rate")
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


def save_classifier(path: str | Path, mlp: nn.Module, mean: torch.Tensor, scale: torch.Tensor) -> None:
    """Write a trained classifier (MLP weights as ``mlp.*``, feature scaler as ``scaler.mean`` / ``scaler.scale``)
    to a safetensors file, atomically; the artifact's JSON (``feature_dim``, ``hidden``) describes its shape."""
    from safetensors.torch import save

    from effreason.jsonl import atomic_write

    tensors = {f"mlp.{k}": v.detach().cpu().contiguous() for k, v in mlp.state_dict().items()}
    tensors.update({"scaler.mean": mean.cpu().contiguous(), "scaler.scale": scale.cpu().contiguous()})
    with atomic_write(Path(path), "wb") as f:
        f.write(save(tensors))


def load_classifier(path: str | Path, feature_dim: Any, hidden: Any, *, error: type[Exception], what: str,
                    meta_file: str, device: str | torch.device = "cpu") -> tuple[nn.Sequential, torch.Tensor,
                                                                                      torch.Tensor]:
    """``(mlp, mean, scale)`` from a file written by ``save_classifier``, the MLP in eval mode.

    Raises:
        error: the file is unreadable or its tensors do not fit ``feature_dim`` / ``hidden`` (from ``meta_file``),
            naming the file; the ``what`` folder is damaged.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device=str(device))
        mlp = build_mlp(int(feature_dim), [int(h) for h in hidden]).to(device)
        mlp.load_state_dict({k[len("mlp."):]: v for k, v in tensors.items() if k.startswith("mlp.")})
        mean, scale = tensors["scaler.mean"], tensors["scaler.scale"]
    except (SafetensorError, OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
        raise error(f"{path}: unreadable or does not fit {meta_file} (feature_dim, hidden): {first[:160]}; "
                    f"the {what} folder is damaged: rebuild it") from None
    mlp.eval()
    return mlp, mean, scale
