"""Steering vectors for concise reasoning (ASC, arXiv 2507.04742; Efficiency Steering, arXiv 2506.15647).

A direction in the residual stream at one layer, ``mean(concise) - mean(verbose)`` states over a few
dozen pairs of the same problems, added at generation time with a strength bounded by the KL it
causes (``strength``). ``recipes/steering.py`` extracts it, sweeps the layer, picks the strength and
writes ``<output_dir>/steering/`` (``vector``); ``effreason eval --steering DIR`` generates with it on
HF (``inject``) and on vLLM (an out-of-tree model registered by the ``vllm_plugin`` entry point);
``serve.steered_hf`` / ``serve.steered_vllm`` give a steered model or engine for deployment.
"""

from effreason.steering.inject import SteeredModel, steer
from effreason.steering.vector import SteeringError, SteeringVector

__all__ = ["SteeredModel", "SteeringError", "SteeringVector", "steer"]
