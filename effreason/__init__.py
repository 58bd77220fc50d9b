"""effreason: recipes and measurement for efficient-reasoning language models."""

__version__ = "0.1.0"
