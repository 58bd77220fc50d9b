"""Evaluation: accuracy and token cost of reasoning models (``effreason eval``).

Modules: ``metrics`` (pure formulas), ``runner`` (generate, apply generation methods, grade, resume),
``completions`` (grade text made elsewhere), ``report`` (results and summary), ``compare`` (tables
and plots), ``config``, ``prompts``, ``cli``. Backends, generation-time methods (budget forcing
among them) and thinking/answer token counts live in ``effreason.generation``.
"""
