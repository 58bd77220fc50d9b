"""Early-exit probes with conformal calibration (LYNX, arXiv 2512.05325).

A small probe reads a reasoning model's hidden states where a cue ("wait", "hmm", "alternatively")
starts in its thinking and says whether the model already has the answer; class-conditional split
conformal calibration bounds how often it stops where stopping is wrong (per cue event, by a chosen
delta). ``recipes/early_exit.py`` builds one; ``effreason eval --exit-probe DIR --delta D`` and the
serving API below use it:

    from effreason.early_exit import ExitProbe, generate_exit_hf
    probe = ExitProbe.load("runs/early-exit-lab/probe")
    probe.check_model(model_path, tokenizer)          # refuses a probe built on another model
    outs = generate_exit_hf(model, tokenizer, prompt_ids, probe, 0.05, max_new_tokens=384)
    outs[0].gen.text, outs[0].info["early_exit"]       # the completion, where and why it exited

(``generate_exit_vllm`` does the same on a running ``vllm.LLM``, with an HF copy of the model for the features.)

Modules: ``cues`` (cue events on token ids), ``features`` (layers and hidden states), ``probe`` (the MLP,
training, the artifact), ``conformal`` (thresholds), ``online`` (exit while generating, and replay),
``data`` (the recipe's rollouts, labels and features), ``bound`` (the bound over random splits),
``method`` (the eval's ``early_exit`` method), ``replay`` (``--completions`` mode), ``bench`` (timing).
"""

from effreason.early_exit.online import generate_exit_hf, generate_exit_vllm
from effreason.early_exit.probe import ExitProbe, ProbeError

__all__ = ["ExitProbe", "ProbeError", "generate_exit_hf", "generate_exit_vllm"]
