"""How hard to steer: the KL-bounded closed form, and the per-token KL measured at a strength.

Closed form (ASC, arXiv 2507.04742; ``../shared/docs/METHODS.md`` section 5). Adding ``gamma * v``
moves the next-token logits ``z`` by about ``gamma * Jv + gamma^2 / 2 * z''`` (``Jv`` the logit
Jacobian-vector product, ``z''`` the second derivative along ``v``). With ``a`` = the median of
``||Jv||`` over positions and ``L`` = the 95th percentile of ``||z''||``, the strength that keeps
``KL(p || p_steered) <= eps`` is: ``x`` the positive root of ``x^3 + x^2 - 4 eps L^2 / a^4 = 0``,
``gamma_raw = (a / L) x``, ``gamma = max(0, (1 - L gamma_raw / (4 a)) gamma_raw)``. (As ``L -> 0`` it
tends to ``2 sqrt(eps) / a``: ``KL ~ ||dz||^2 / 4``.)

Here both derivatives are taken of the logits *as steered generation produces them*: the vector is
added at every position from the last prompt token on (``effreason.steering.inject``), so a
position's logits also move through attention to earlier steered positions. They are central
finite differences at a step ``h`` (``z(+h)``, ``z(0)``, ``z(-h)``): ``Jv = (z(h) - z(-h)) / 2h``,
``z'' = (z(h) - 2 z(0) + z(-h)) / h^2``, over the held-out sequences' completion positions.

The closed form is local; whether it holds is measured (``kl_stats``): the KL between the steered and
unsteered next-token distributions at each position of held-out prompts continued with the model's
own unsteered completion, reported as median and 95th percentile. ``search_gamma`` finds the
largest strength whose measured p95 is within ``eps`` (the recipe's default when the closed form
misses its bound).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from effreason.steering.inject import steer


def cubic_root(c: float) -> float:
    """The positive root of ``x^3 + x^2 - c = 0`` (``c >= 0``; 0 for ``c == 0``)."""
    if c < 0:
        raise ValueError(f"c must be >= 0, got {c}")
    if c == 0:
        return 0.0
    x = math.sqrt(c) if c < 1 else c ** (1 / 3)  # above the root: f is increasing and convex for x > 0
    for _ in range(100):
        step = (x**3 + x**2 - c) / (3 * x**2 + 2 * x)
        x -= step
        if abs(step) <= 1e-15 * max(1.0, x):
            break
    return x


def closed_form_gamma(a: float, L: float, eps: float) -> dict:
    """``{"x", "gamma_raw", "gamma"}`` of the closed form for ``a`` (median ||Jv||), ``L`` (p95 curvature), ``eps``.

    Raises:
        ValueError: ``a <= 0`` (the direction does not move the logits), ``L < 0`` or ``eps <= 0``.
    """
    if not a > 0:
        raise ValueError(f"a = median ||Jv|| is {a}: the direction does not move the logits, so no strength is "
                         "bounded by it; check the pairs (concise and verbose must differ)")
    if L < 0 or not eps > 0:
        raise ValueError(f"need L >= 0 and eps > 0, got L={L}, eps={eps}")
    if L == 0:
        gamma = 2 * math.sqrt(eps) / a
        return {"x": 0.0, "gamma_raw": gamma, "gamma": gamma}
    x = cubic_root(4 * eps * L**2 / a**4)
    gamma_raw = a / L * x
    return {"x": x, "gamma_raw": gamma_raw, "gamma": max(0.0, (1 - L * gamma_raw / (4 * a)) * gamma_raw)}


# --- measurements on held-out sequences ----------------------------------------------------------------


def _batches(sequences: Sequence[Sequence[int]], max_batch_tokens: int):
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) + 1) * len(sequences[i]) > max_batch_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.inference_mode()
def _logits_at(model: Any, sequences, starts, batch, vector, layer, gamma, pad_id) -> list[torch.Tensor]:
    """Per sequence of the batch, its float32 next-token logits at positions ``start .. len - 2`` (copies: the
    batch's full logits are freed), with ``gamma * vector`` added from ``start`` on."""
    device = next(model.parameters()).device
    width = max(len(sequences[i]) for i in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, i in enumerate(batch):  # right-padded: positions 0..n-1 as in generation
        ids[row, : len(sequences[i])] = torch.tensor(list(sequences[i]))
        mask[row, : len(sequences[i])] = 1
    start = torch.tensor([starts[i] for i in batch])
    with steer(model, vector, layer, gamma, start=start):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    return [logits[row, starts[i] : len(sequences[i]) - 1].float().clone() for row, i in enumerate(batch)]


def derivative_stats(model: Any, sequences: Sequence[Sequence[int]], starts: Sequence[int], vector: torch.Tensor,
                     layer: int, *, step: float, max_batch_tokens: int = 16384, pad_id: int = 0) -> dict:
    """``a`` (median ||Jv||) and ``L`` (p95 ||z''||) over the positions ``start .. len - 2`` of each sequence.

    Args:
        starts: per sequence, its last prompt position (where steering starts).
        step: the finite-difference step ``h`` in units of gamma.
    """
    first, second = [], []
    for batch in _batches(sequences, max_batch_tokens):
        plus = _logits_at(model, sequences, starts, batch, vector, layer, step, pad_id)
        zero = _logits_at(model, sequences, starts, batch, vector, layer, 0.0, pad_id)
        minus = _logits_at(model, sequences, starts, batch, vector, layer, -step, pad_id)
        for p, z, m in zip(plus, zero, minus, strict=True):
            first.append(((p - m) / (2 * step)).norm(dim=-1))
            second.append(((p - 2 * z + m) / step**2).norm(dim=-1))
    jv, curv = torch.cat(first).double(), torch.cat(second).double()
    if jv.numel() == 0:
        raise ValueError("no positions to measure: the held-out sequences have no completion tokens")
    return {"a": float(jv.median()), "L": float(torch.quantile(curv, 0.95)), "positions": int(jv.numel()),
            "step": step, "jv_p95": float(torch.quantile(jv, 0.95)), "curvature_median": float(curv.median())}


def kl_values(model: Any, sequences: Sequence[Sequence[int]], starts: Sequence[int], vector: torch.Tensor,
              layer: int, gamma: float, *, max_batch_tokens: int = 16384, pad_id: int = 0) -> torch.Tensor:
    """Per position (``start .. len - 2`` of each sequence, sequences in order), ``KL(p || p_steered)`` of the
    next-token distributions."""
    out: dict[int, torch.Tensor] = {}
    for batch in _batches(sequences, max_batch_tokens):
        base = _logits_at(model, sequences, starts, batch, vector, layer, 0.0, pad_id)
        steered = _logits_at(model, sequences, starts, batch, vector, layer, gamma, pad_id)
        for i, z, s in zip(batch, base, steered, strict=True):
            logp, logq = torch.log_softmax(z, -1), torch.log_softmax(s, -1)
            out[i] = (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)
    return torch.cat([out[i] for i in range(len(sequences))]).double()


def kl_stats(kl: torch.Tensor) -> dict:
    """Median, p95, mean and max of per-token KL values."""
    return {"median": float(kl.median()), "p95": float(torch.quantile(kl, 0.95)), "mean": float(kl.mean()),
            "max": float(kl.max()), "positions": int(kl.numel())}


def search_gamma(p95_at: Callable[[float], float], eps: float, start: float, *, iterations: int = 10,
                 max_doublings: int = 24) -> tuple[float, list[dict]]:
    """The largest ``gamma`` (same sign as ``start``) whose measured p95 KL is ``<= eps``, by doubling then bisection.

    Assumes the p95 grows with ``|gamma|`` (checked only at the points tried). Returns the strength and
    every ``{"gamma", "kl_p95"}`` tried, in order.
    """
    if start == 0:
        raise ValueError("search_gamma needs a nonzero start")
    tried: list[dict] = []

    def within(g: float) -> bool:
        p95 = p95_at(g)
        tried.append({"gamma": g, "kl_p95": p95})
        return p95 <= eps

    lo, hi = 0.0, None
    g = start
    for _ in range(max_doublings):
        if within(g):
            lo, g = g, g * 2
        else:
            hi = g
            break
    if hi is None:
        return lo, tried
    if lo == 0.0:  # start was too strong: halve until within
        g = hi / 2
        for _ in range(max_doublings):
            if within(g):
                lo = g
                break
            hi, g = g, g / 2
        else:
            return 0.0, tried
    for _ in range(iterations):
        mid = math.copysign(math.sqrt(abs(lo * hi)), start)  # geometric: strengths span decades
        if within(mid):
            lo = mid
        else:
            hi = mid
    return lo, tried
