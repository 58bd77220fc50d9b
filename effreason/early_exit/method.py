"""``early_exit``: the eval's generation method for a trained exit probe (``--exit-probe DIR --delta D``).

It draws the samples itself (a ``SamplerMethod``): on HF the probe reads hidden states through
forward hooks while ``generate`` runs (``HIDDEN_STATES``); on vLLM the driver streams each request's
tokens, reads the features of each cue with an HF copy of the model and aborts the requests that exit
(see ``effreason.early_exit.online``). Both backends run it. The probe must have been built on the
evaluated model (weights and tokenizer fingerprints) and calibrated for the delta asked.

Each row records ``{"early_exit": {"delta", "exited", "exit_token", "cue", "p", "cues_seen", "discarded"}}``.

    effreason eval --model runs/early-exit-lab/start_model --benchmark lab --exit-probe runs/early-exit-lab/probe \
        --delta 0.05 --output OUT
    recipe YAML:  eval_methods: {early_exit: {probe: runs/early-exit-lab/probe, delta: 0.05}}
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any

from effreason.early_exit.online import NAME
from effreason.generation.types import Capability

logger = logging.getLogger(__name__)


class EarlyExit:
    """Exit the thinking at a cue when a calibrated probe says the model already has the answer."""

    name = NAME
    requires = frozenset({Capability.CONTINUE_FROM_IDS})
    setting_names = frozenset({"probe", "delta", "answer_tokens", "probe_sha256"})

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--exit-probe", metavar="DIR",
                            help="early exit: a probe folder from recipes/early_exit.py (<output_dir>/probe)")
        parser.add_argument("--delta", type=float, metavar="D",
                            help="early exit: the bound on how often it exits where exiting is wrong (one of the "
                                 "probe's calibrated deltas)")
        parser.add_argument("--exit-answer-tokens", type=int, metavar="N",
                            help="early exit: tokens allowed for the answer after the exit string (default: the "
                                 "probe's)")

    def settings(self, args: argparse.Namespace) -> dict | None:
        probe, delta = getattr(args, "exit_probe", None), getattr(args, "delta", None)
        answer = getattr(args, "exit_answer_tokens", None)
        if probe is None:
            if delta is not None or answer is not None:
                raise ValueError("--delta and --exit-answer-tokens are early-exit options: give the probe too, "
                                 "--exit-probe DIR")
            return None
        if delta is None:
            raise ValueError("--exit-probe needs --delta D (one of the deltas the probe was calibrated for)")
        return {"probe": probe, "delta": delta, **({"answer_tokens": answer} if answer is not None else {})}

    def check_settings(self, settings: dict, *, samples: int) -> None:
        """Refuse a missing or damaged probe, or a delta it was not calibrated for, before any model loads."""
        from effreason.early_exit.probe import ExitProbe

        for key in ("probe", "delta"):
            if settings.get(key) is None:
                raise ValueError(f"early_exit needs the setting {key!r}")
        answer = settings.get("answer_tokens")
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, int) or answer < 1):
            raise ValueError(f"early_exit answer_tokens must be an integer >= 1, got {answer!r}")
        t = ExitProbe.load(settings["probe"]).threshold(float(settings["delta"]))
        if math.isinf(t.q0):
            logger.warning("early exit: at delta %g this probe never exits (only %d calibration events where exiting "
                           "is wrong; it needs at least %d): the run is the model without exit", t.delta, t.n0,
                           math.ceil(1 / t.delta) - 1)

    def check_model_source(self, settings: dict, model: str, adapter: str | None, tokenizer: Any) -> None:
        """Refuse, before any model loads, a probe built for another model than ``model`` (+ ``adapter``)."""
        from effreason.early_exit.probe import ExitProbe
        from effreason.hidden import model_shape
        from effreason.models import resolve_model_path

        path = resolve_model_path(model)
        depth, hidden = model_shape(path)
        ExitProbe.load(settings["probe"]).check_model(path, tokenizer, depth=depth, hidden_size=hidden, adapter=adapter)

    def calibrated_deltas(self, probe_dir: str) -> list[float]:
        """The deltas a probe folder holds thresholds for."""
        from effreason.early_exit.probe import ExitProbe

        return [t.delta for t in ExitProbe.load(probe_dir).thresholds]

    def resolve_settings(self, settings: dict) -> dict:
        """Add the probe's content hash, so a run resumes only with the same probe."""
        from pathlib import Path

        from effreason.early_exit.probe import META_FILE
        from effreason.outputs import file_sha256

        return {**settings, "probe_sha256": file_sha256(Path(settings["probe"]) / META_FILE)}

    def answer_room(self, settings: dict) -> int:
        """Tokens an exit may add after a cut (its answer; the runner's margin holds the exit string)."""
        from effreason.early_exit.probe import ExitProbe

        return settings.get("answer_tokens") or ExitProbe.load(settings["probe"]).answer_tokens

    def exit_ids(self, settings: dict, tokenizer: Any) -> list[int]:
        """The token ids the probe's exit string forces."""
        from effreason.early_exit.online import exit_ids
        from effreason.early_exit.probe import ExitProbe

        return exit_ids(tokenizer, ExitProbe.load(settings["probe"]).exit_string)

    def sampler(self, backend: Any, settings: dict):
        from effreason.early_exit.online import generate_exit_hf, generate_exit_vllm
        from effreason.early_exit.probe import ExitProbe

        probe = ExitProbe.load(settings["probe"])
        delta = float(settings["delta"])
        probe.threshold(delta)
        answer_tokens = settings.get("answer_tokens")
        tok = backend.tokenizer
        timing: dict = {}  # seconds in the probe's work, the answers after exits, and the whole exit generation
        if backend.name == "hf":
            model = backend.hooks.model
            _check(probe, model, backend.model_path, tok, backend.adapter)

            def sample(prompt_ids, n, max_new_tokens, seeds):
                import torch

                s = backend.sampling
                if not s.greedy:
                    torch.manual_seed(seeds[0] if seeds else s.seed)
                outs = generate_exit_hf(model, tok, [p for p in prompt_ids for _ in range(n)], probe, delta,
                                        max_new_tokens=max_new_tokens, batch_size=backend.batch_size,
                                        do_sample=not s.greedy, temperature=s.temperature or 1.0, top_p=s.top_p,
                                        logits_processor=backend.hooks.logits_processors,
                                        stopping_criteria=backend.hooks.stopping_criteria, answer_tokens=answer_tokens,
                                        timing=timing)
                return [[(o.gen, o.info, o.new_tokens) for o in outs[i * n : (i + 1) * n]] for i in range(len(prompt_ids))]

            sample.timing = timing
            return sample
        if backend.name == "vllm":
            feature_model = backend.feature_model()
            _check(probe, feature_model, backend.model_path, tok, backend.adapter)

            def sample(prompt_ids, n, max_new_tokens, seeds):
                s = backend.sampling
                outs = generate_exit_vllm(backend.llm, tok, feature_model, prompt_ids, probe, delta, n=n,
                                          max_new_tokens=max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                                          seeds=None if s.greedy else seeds, lora=backend.lora,
                                          extra_args=backend.extra_args, answer_tokens=answer_tokens, timing=timing)
                return [[(o.gen, o.info, o.new_tokens) for o in row] for row in outs]

            sample.timing = timing
            return sample
        raise ValueError(f"early_exit does not know backend {backend.name!r}")


def _check(probe: Any, model: Any, model_path: str | None, tokenizer: Any, adapter: str | None = None) -> None:
    """Refuse a probe built for another model (weights, adapter, tokenizer, depth, width)."""
    from effreason.hidden import num_layers

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    probe.check_model(model_path, tokenizer, depth=num_layers(base),
                      hidden_size=getattr(base.config, "hidden_size", None), adapter=adapter)


METHOD = EarlyExit()
