"""Supervised fine-tuning on pruned reasoning traces (``recipes/sft.py``): data, training, figures."""
