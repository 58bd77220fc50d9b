"""TLDR: one model that obeys a length level in its prompt (arXiv 2505.07961).

GRPO on TRL's ``GRPOTrainer`` with a length-penalised reward: each training prompt gets a level
(short / medium / long, drawn uniformly) whose instruction is appended to the prompt, and each level
has its own token budget ``B_l`` and weight ``lambda_l``::

    r = 1[correct] - lambda_l * max(0, L - B_l) / B_l

(``effreason.rewards.TLDRLength``; the paper does not specify ``P(L)``, the weights or the prompt
wording: these are the project's choices.) After training, the start model and the trained model
at every level are evaluated with the eval suite and compared (``comparison.md`` / ``.png``).

    accelerate launch recipes/tldr.py                         # the lab default (CPU, minutes)
    accelerate launch recipes/tldr.py --config recipes/configs/qwen1.5b/tldr.yaml
"""

import sys
from pathlib import Path

from effreason.training.recipes import run_tldr

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lab" / "tldr.yaml"


def main(argv: list[str] | None = None) -> int:
    return run_tldr(sys.argv[1:] if argv is None else argv, DEFAULT_CONFIG)


if __name__ == "__main__":
    sys.exit(main())
