"""Settings of ``effreason lab bootstrap`` (kept free of heavy imports so the CLI starts fast)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BootstrapConfig:
    """Settings of ``effreason lab bootstrap`` (defaults build the shipped checkpoint)."""

    seed: int = 0
    steps: int = 1200
    concise_steps: int = 600
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    verbose_share: float = 0.8
    hidden_size: int = 128
    num_layers: int = 3
    intermediate_size: int = 384
    eval_limit: int | None = None
    eval_batch_size: int = 250
    max_new_tokens: int = 320
    threads: int = 2
    # Held-out accuracy gate (``bootstrap`` module docstring): greedy checks on the first
    # ``gate_problems`` dev problems (0: no gate); extra steps only when a check fails, until ``time_limit_s``.
    gate_accuracy: float = 0.97
    gate_tokens_ratio: float = 2.7
    gate_problems: int = 300
    gate_every: int = 50
    time_limit_s: float = 480.0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0 <= self.concise_steps <= self.steps:
            raise ValueError(f"concise_steps must be in [0, steps={self.steps}], got {self.concise_steps}")
        if not 0.0 <= self.verbose_share <= 1.0:
            raise ValueError(f"verbose_share must be in [0, 1], got {self.verbose_share}")
        if self.gate_problems < 0 or self.gate_every < 1:
            raise ValueError(f"gate_problems must be >= 0 (0: no gate) and gate_every >= 1, "
                             f"got {self.gate_problems}, {self.gate_every}")
