"""LoRA reasoning adapters: one base model for direct answers, a reasoning adapter switched on per query.

After "Efficient Reasoning on the Edge" (arXiv 2603.16867; no code published, METHODS.md section 6):
a LoRA adapter trained by SFT on reasoning traces, then by RL on the adapter alone to keep its thinking
within a length bucket requested in the prompt (``buckets``), and a light router on the base model's
hidden state at the end of the prompt that sends each query to the base alone or to base + adapter
(``router``). ``method`` serves the routed system through ``effreason eval`` on HF and vLLM;
``serve`` is the Python API; ``recipes/lora_adapter.py`` builds all of it.
"""
