"""Generation: backends (transformers, vLLM) that declare their capabilities, and generation-time methods.

See ``effreason/generation/README.md``: ``backends`` (``Backend``, ``build_backend``), ``types``
(``Generation``, ``Capability``), ``methods`` (the method shape and registry), ``budget_forcing``
(s1, the worked example), ``thinking`` (thinking vs answer token counts).
"""

from effreason.generation.types import Capability, Generation

__all__ = ["Capability", "Generation"]
