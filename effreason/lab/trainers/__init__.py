"""The lab's start-model trainers, kept apart from the lab's task and data (``effreason.lab``).

- ``bootstrap``: the shipped overthinker, SFT of a fresh tiny Qwen3 on verbose-leaning traces
  (``effreason lab bootstrap``; settings in ``config``).
- ``warmup``: short SFT warm-ups on traces of one style; ``slippy_start_model`` starts the SFT
  recipe's lab default.
- ``levels``: the level warm-up that teaches the lab model to read TLDR's length instruction.
- ``direct``: the shipped base that answers without thinking (``lab_base``), the start of the reasoning-adapter
  recipe (``effreason lab bootstrap-base``).

Only recipes and the lab's own CLI import these; the library's lower layers (evaluation, generation,
grading, rewards, training) never import anything from ``effreason.lab``.
"""
