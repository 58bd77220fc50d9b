"""L-GRPO: make a reasoning model shorter without making it worse (ConciseR, arXiv 2505.21178).

Two stages on TRL's ``GRPOTrainer`` (via ``effreason.training.grpo.EfficientGRPOTrainer``):

1. **GRPO++**: GRPO with clip-higher (``epsilon_high``), dynamic sampling (groups with all-equal
   rewards are masked out of the loss; TRL cannot refill the batch, see ``effreason.training.grpo``)
   and an entropy bonus (``entropy_coef``), on the correctness reward.
2. **L-GRPO**: the length reward acts only in groups where every rollout is correct
   (``effreason.rewards.LGRPO``); dynamic sampling keeps those groups, since their rewards differ
   by length.

``stage: 1``, ``2`` or ``both`` (in turn; ``stage1:`` / ``stage2:`` hold each stage's overrides).
After training, the start model and each stage are evaluated with the eval suite and compared
(``comparison.md`` / ``.png`` in ``output_dir``).

    accelerate launch recipes/lgrpo.py                        # the lab default (CPU, minutes)
    accelerate launch recipes/lgrpo.py --config recipes/configs/qwen1.5b/lgrpo_colocate.yaml
"""

import sys
from pathlib import Path

from effreason.training.recipes import run_lgrpo

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lab" / "lgrpo.yaml"


def main(argv: list[str] | None = None) -> int:
    return run_lgrpo(sys.argv[1:] if argv is None else argv, DEFAULT_CONFIG)


if __name__ == "__main__":
    sys.exit(main())
