"""Glue between effreason and the training engines it builds on (TRL, vLLM)."""
