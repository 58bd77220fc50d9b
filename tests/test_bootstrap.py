import json
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from effreason.cli import main
from effreason.lab.trainers.bootstrap import (
    collate,
    length_bucketed_batches,
    mixed_style_batches,
    run_bootstrap,
    training_examples,
)
from effreason.lab.trainers.config import BootstrapConfig
from effreason.models import LAB_MODEL_DIR, load_model_and_tokenizer, resolve_model_path


def test_collate_masks_prompt_and_padding(lab_tokenizer):
    examples = training_examples(lab_tokenizer, 4, seed=0, verbose_share=0.5)
    input_ids, attention, labels = collate(examples, lab_tokenizer.pad_token_id)
    for row, (ids, prompt_len) in enumerate(examples):
        assert labels[row, :prompt_len].eq(-100).all()
        assert labels[row, prompt_len : len(ids)].tolist() == ids[prompt_len:]
        assert labels[row, len(ids) :].eq(-100).all() and attention[row].sum() == len(ids)
        assert ids[-1] == lab_tokenizer.eos_token_id


def test_training_examples_are_deterministic_and_bucketing_keeps_every_example(lab_tokenizer):
    a = training_examples(lab_tokenizer, 64, seed=3, verbose_share=0.8)
    assert a == training_examples(lab_tokenizer, 64, seed=3, verbose_share=0.8)
    batches = length_bucketed_batches(a, 8, seed=0, chunk_batches=4)
    assert sorted(map(str, (e for b in batches for e in b))) == sorted(map(str, a))
    assert len(batches) == 8


def test_every_mixed_batch_holds_the_verbose_share(lab_tokenizer):
    """Length bucketing over the mix made batches of one style (concise traces are ~3x shorter), which flipped
    the greedy style with the last batches; every batch now holds round(share * size) verbose traces."""
    verbose_ids = set(map(str, training_examples(lab_tokenizer, 30, "9/verbose", 1.0)))
    concise_ids = set(map(str, training_examples(lab_tokenizer, 30, "9/concise", 0.0)))
    batches = mixed_style_batches(lab_tokenizer, 6, 5, 9, verbose_share=0.8, chunk_batches=4)
    assert len(batches) == 6 and all(len(b) == 5 for b in batches)
    assert [sum(str(e) in verbose_ids for e in b) for b in batches] == [4] * 6
    assert all(sum(str(e) in concise_ids for e in b) == 1 for b in batches)
    assert batches == mixed_style_batches(lab_tokenizer, 6, 5, 9, verbose_share=0.8, chunk_batches=4)
    concise_only = mixed_style_batches(lab_tokenizer, 3, 4, 1, verbose_share=0.0)
    assert len(concise_only) == 3 and all(len(b) == 4 for b in concise_only)


def test_config_validation():
    with pytest.raises(ValueError, match="concise_steps"):
        BootstrapConfig(steps=10, concise_steps=20)
    with pytest.raises(ValueError, match="verbose_share"):
        BootstrapConfig(verbose_share=1.5)


def test_bootstrap_smoke_writes_checkpoint_and_metrics(tmp_path):
    out = tmp_path / "lab"
    cfg = BootstrapConfig(steps=4, concise_steps=2, warmup_steps=1, batch_size=4, eval_limit=8,
                          max_new_tokens=16, gate_problems=0)
    metrics = run_bootstrap(cfg, out)
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "tokens_mean", "oracle_tokens_mean", "hard_accuracy", "no_think_accuracy"):
        assert saved[key] == metrics[key]
    assert saved["n"] == 8 and 0 <= saved["accuracy"] <= 1 and saved["oracle_tokens_mean"] > 10
    model, tok = load_model_and_tokenizer(out)
    assert model.config.model_type == "qwen3" and tok.eos_token == "<|im_end|>"
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_bootstrap(cfg, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab"]  # no temp dirs left behind


def test_cli_lab_show(capsys):
    assert main(["lab", "show", "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("problem : start") == 2 and "oracle  : <think>" in out


def test_lab_alias_resolves_to_the_shipped_checkpoint():
    if not (LAB_MODEL_DIR / "config.json").is_file():
        pytest.fail(f"shipped lab checkpoint missing at {LAB_MODEL_DIR}")
    assert resolve_model_path("lab") == str(LAB_MODEL_DIR)
    assert resolve_model_path("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    AutoModelForCausalLM.from_pretrained(resolve_model_path("lab"))


def test_training_is_deterministic_for_a_seed():
    from effreason.lab.trainers.bootstrap import train

    cfg = BootstrapConfig(steps=3, concise_steps=1, warmup_steps=1, batch_size=4, threads=1, gate_problems=0)
    first, _, _, loss_a, _ = train(cfg)
    second, _, _, loss_b, _ = train(cfg)
    assert loss_a == loss_b
    assert all((a == b).all() for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True))
    other, _, _, _, _ = train(BootstrapConfig(steps=3, concise_steps=1, warmup_steps=1, batch_size=4, threads=1, seed=1,
                                              gate_problems=0))
    assert not all((a == b).all() for a, b in zip(first.state_dict().values(), other.state_dict().values(), strict=True))


def test_bootstrap_never_replaces_a_folder_that_is_no_lab_checkpoint(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "file.txt").write_text("precious")
    assert main(["lab", "bootstrap", "--out", str(home), "--overwrite", "--steps", "1",
                 "--concise-steps", "0"]) == 2
    assert "is not empty and was not written by `effreason lab bootstrap`" in capsys.readouterr().err
    assert [p.name for p in home.iterdir()] == ["file.txt"]  # refused before any training
    (tmp_path / "f").write_text("a file")
    with pytest.raises(FileExistsError, match="is not a folder"):
        run_bootstrap(BootstrapConfig(steps=1, concise_steps=0), tmp_path / "f", overwrite=True)


# The held-out gate: tiny configs (a few steps of 4 examples, 4 dev problems, 8 new tokens).
GATED = dict(steps=4, concise_steps=2, warmup_steps=1, batch_size=4, threads=1, gate_problems=4, gate_every=2,
             max_new_tokens=8, eval_limit=4, eval_batch_size=4)


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_gate_that_passes_at_once_trains_exactly_the_ungated_run():
    from effreason.lab.trainers.bootstrap import train

    ungated, _, _, loss_a, gate_a = train(BootstrapConfig(**{**GATED, "gate_problems": 0}))
    # thresholds of 0 always pass: the check runs (generation, grading) and must leave no trace
    gated, _, _, loss_b, gate_b = train(BootstrapConfig(**GATED, gate_accuracy=0.0, gate_tokens_ratio=0.0))
    assert gate_a == {"passed": True, "checks": [], "extra_steps": 0, "steps_trained": 4}
    assert [(c["step"], c["passed"]) for c in gate_b["checks"]] == [(4, True)]
    assert gate_b["extra_steps"] == 0 and loss_a == loss_b and _same_weights(ungated, gated)


def test_gate_check_leaves_weights_mode_and_rng_untouched(lab_tokenizer):
    from effreason.lab.model import build_lab_model
    from effreason.lab.trainers.bootstrap import gate_check

    model = build_lab_model(lab_tokenizer, seed=0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch_rng, python_rng = torch.get_rng_state(), random.getstate()
    check = gate_check(model, lab_tokenizer, BootstrapConfig(**GATED), 7)
    assert check["step"] == 7 and 0 <= check["accuracy"] <= 1 and check["passed"] is False  # untrained
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), torch_rng) and random.getstate() == python_rng


def test_failed_gate_trains_more_until_it_passes(monkeypatch):
    from effreason.lab.trainers import bootstrap

    verdicts = iter([False, False, True])  # fails twice, then passes

    def fake_check(model, tokenizer, cfg, step):
        return {"step": step, "accuracy": 0.5, "tokens_ratio": 3.0, "passed": next(verdicts)}

    ungated, *_ = bootstrap.train(BootstrapConfig(**{**GATED, "gate_problems": 0}))
    monkeypatch.setattr(bootstrap, "gate_check", fake_check)
    model, _, _, _, gate = bootstrap.train(BootstrapConfig(**GATED))
    assert [c["step"] for c in gate["checks"]] == [4, 6, 8]
    assert gate["extra_steps"] == 4 and gate["steps_trained"] == 8 and gate["passed"]
    assert not _same_weights(model, ungated)


def test_gate_missed_within_the_time_limit_writes_nothing_unless_kept(monkeypatch, tmp_path):
    from effreason.lab.trainers import bootstrap

    def failing(model, tokenizer, cfg, step):
        return {"step": step, "accuracy": 0.1, "tokens_ratio": 1.0, "passed": False}

    monkeypatch.setattr(bootstrap, "gate_check", failing)
    cfg = BootstrapConfig(**GATED, time_limit_s=0.0)  # no time for extra steps: one check
    (tmp_path / "lab").mkdir()  # an earlier lab checkpoint, which --overwrite may replace
    for name in ("config.json", "metrics.json"):
        (tmp_path / "lab" / name).write_text("{}")
    with pytest.raises(bootstrap.GateFailed, match="missed the gate"):
        bootstrap.run_bootstrap(cfg, tmp_path / "lab", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "lab").iterdir()) == ["config.json", "metrics.json"]
    metrics = bootstrap.run_bootstrap(cfg, tmp_path / "kept", keep_failed=True)
    assert metrics["gate"]["passed"] is False and metrics["steps_trained"] == 4
    assert [c["step"] for c in metrics["gate"]["checks"]] == [4]
    assert json.loads((tmp_path / "kept" / "metrics.json").read_text())["gate"]["extra_steps"] == 0


def test_bootstrap_grid_reads_back_finished_cells_and_flags_misses(tmp_path, capsys):
    from effreason.lab.bench import bootstrap_grid

    for seed, accuracy in ((0, 0.999), (1, 0.185)):
        cell = tmp_path / f"s{seed}-t1"
        cell.mkdir()
        checks = [{"step": 1200, "accuracy": accuracy, "tokens_ratio": 3.5, "passed": accuracy > 0.97},
                  {"step": 1250, "accuracy": 0.98, "tokens_ratio": 3.4, "passed": True}]
        (cell / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "tokens_ratio": 3.5, "hard_accuracy": 0.9,
                                                       "steps_trained": 1200, "gate": {"checks": checks}}))
        (cell / "bench.json").write_text(json.dumps({"wall_s": 500.0, "load_start": 1.0, "load_end": 2.0}))
    rows = bootstrap_grid(tmp_path, seeds=[0, 1], threads=[1])  # finished cells: read back, nothing trained
    lines = capsys.readouterr().out.splitlines()
    assert [r["seed"] for r in rows] == [0, 1] and len(lines) == 4
    assert "@1200:0.999/3.50 @1250:0.980/3.40" in lines[2] and lines[2].endswith("| yes |")
    assert lines[3].endswith("| NO |")
