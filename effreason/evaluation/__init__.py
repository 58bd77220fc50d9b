"""Evaluation: accuracy and token cost of reasoning models (``effreason eval``).

Modules: ``metrics`` (pure formulas), ``budget`` (thinking budgets and token splits), ``runner``
(generate, grade, resume), ``completions`` (grade text made elsewhere), ``report`` (results and
summary), ``compare`` (tables and plots), ``methods`` (generation-time method hook), ``cli``.
"""
