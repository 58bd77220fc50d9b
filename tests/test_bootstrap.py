import json

import pytest
from transformers import AutoModelForCausalLM

from effreason.cli import main
from effreason.lab.trainers.bootstrap import (
    collate,
    length_bucketed_batches,
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


def test_config_validation():
    with pytest.raises(ValueError, match="concise_steps"):
        BootstrapConfig(steps=10, concise_steps=20)
    with pytest.raises(ValueError, match="verbose_share"):
        BootstrapConfig(verbose_share=1.5)


def test_bootstrap_smoke_writes_checkpoint_and_metrics(tmp_path):
    out = tmp_path / "lab"
    cfg = BootstrapConfig(steps=4, concise_steps=2, warmup_steps=1, batch_size=4, eval_limit=8,
                          max_new_tokens=16)
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

    cfg = BootstrapConfig(steps=3, concise_steps=1, warmup_steps=1, batch_size=4, threads=1)
    first, _, _, loss_a = train(cfg)
    second, _, _, loss_b = train(cfg)
    assert loss_a == loss_b
    assert all((a == b).all() for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True))
    other, _, _, _ = train(BootstrapConfig(steps=3, concise_steps=1, warmup_steps=1, batch_size=4, threads=1, seed=1))
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
