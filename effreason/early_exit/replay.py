"""Replay: where would the probe have exited finished completions? (``effreason eval --completions F --exit-probe DIR``)

The LYNX reference evaluates this way. Each completion's cue events are found on its token ids (the
``prompt_ids`` / ``completion_ids`` fields that ``recipes/early_exit.py``'s ``rollouts.jsonl`` keeps; else
the ``prompt`` and ``completion`` texts, each tokenised once, whole), the probe reads their features
in one forward pass per completion, and a completion that exits is cut before its first exit cue,
given the exit string and a greedy answer (HF), then graded like any completion. It saves no
generation time (the completions were generated in full); it shows what online exit would do.
"""

from __future__ import annotations

import time
from typing import Any

from effreason.jsonl import DataError


def replay_completions(cfg: Any, inputs: list[dict]) -> dict:
    """Replace each input's completion by its early-exit version (in place); return timing figures."""
    from effreason.early_exit.method import _check
    from effreason.early_exit.online import NAME, exit_ids, replay_exit
    from effreason.early_exit.probe import ExitProbe
    from effreason.generation.hf import generate_hf
    from effreason.models import load_model_and_tokenizer, resolve_model_path

    settings = cfg.methods[NAME]
    probe = ExitProbe.load(settings["probe"])
    delta = float(settings["delta"])
    probe.threshold(delta)
    tic = time.perf_counter()
    source = cfg.model or probe.model.get("path") or probe.model.get("name")
    if not source:
        raise ValueError(f"{settings['probe']}: the probe does not say which model it was built on; give --model")
    if not cfg.model:  # the probe's own record: say where it came from when it cannot be found
        from effreason.models import check_model_source

        try:
            check_model_source(source, "the probe's model")
        except (OSError, ValueError) as e:
            raise ValueError(f"{e} (recorded in {settings['probe']}/probe.json); give the model with --model") from None
    model_path = resolve_model_path(source)
    model, tok = load_model_and_tokenizer(model_path, adapter=cfg.adapter, dtype=cfg.dtype, device=cfg.device)
    _check(probe, model, model_path, tok, cfg.adapter)
    if cfg.tokenizer is None:
        cfg.tokenizer = model_path  # token counts with the model's tokenizer
    load_s = time.perf_counter() - tic
    prompts, completions = [], []
    for r in inputs:
        if "prompt_ids" in r:
            prompts.append(r["prompt_ids"])
        elif isinstance(r["prompt"], str):
            prompts.append(tok(r["prompt"], add_special_tokens=False)["input_ids"])
        else:
            raise DataError(cfg.completions, None, f"row {r['id']}: replaying an exit needs the prompt (a `prompt` "
                            "text or `prompt_ids`)", field="prompt")
        completions.append(r.get("completion_ids") or tok(r["completion"], add_special_tokens=False)["input_ids"])
    tic = time.perf_counter()
    states = replay_exit(model, tok, prompts, completions, probe, delta)
    probe_s = time.perf_counter() - tic
    forced = exit_ids(tok, probe.exit_string)
    exited = [i for i, st in enumerate(states) if st.exit is not None]
    tic = time.perf_counter()
    answers = generate_hf(model, tok, [prompts[i] + completions[i][: states[i].exit.token] + forced for i in exited],
                          max_new_tokens=settings.get("answer_tokens") or probe.answer_tokens,
                          batch_size=cfg.batch_size or 64) if exited else []
    answer_s = time.perf_counter() - tic
    for i, st in enumerate(states):
        inputs[i]["method_info"] = {NAME: {**st.info(delta), "replay": True, "tokens_before": len(completions[i])}}
    for i, a in zip(exited, answers, strict=True):
        ids = completions[i][: states[i].exit.token] + forced + a.token_ids
        inputs[i].update(completion=tok.decode(ids, skip_special_tokens=True), finished=a.finished, forced=True)
    return {"model_path": model_path, "model_load_s": load_s, "replay_probe_s": probe_s, "replay_answer_s": answer_s,
            "replayed": len(inputs), "replay_exits": len(exited)}
