"""Generation backends (transformers, vLLM) behind one result type."""

from effreason.generation.types import Generation

__all__ = ["Generation"]
