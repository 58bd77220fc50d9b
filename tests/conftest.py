import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def load_recipe(name: str):
    """``recipes/<name>.py`` as a module (recipes are scripts, not a package): call its ``main(argv)``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_recipe", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_bpe_model(tmp_path_factory, benchmarks_dir) -> Path:
    """A random 2-layer Qwen2 with an R1-style BPE tokenizer, saved once per test module."""
    from test_shipped_configs import build_tiny_r1

    return build_tiny_r1(tmp_path_factory.mktemp("tiny"), benchmarks_dir)


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The offline benchmark copies (../shared/data/benchmarks, or $EFFREASON_BENCHMARKS_DIR)."""
    path = Path(os.environ.get("EFFREASON_BENCHMARKS_DIR", REPO.parent / "shared" / "data" / "benchmarks"))
    if not (path / "gsm8k" / "test.jsonl").is_file():
        pytest.skip(f"offline benchmark copies not found at {path}")
    return path


@pytest.fixture(scope="session")
def lab_tokenizer():
    from effreason.lab.tokenizer import build_lab_tokenizer

    return build_lab_tokenizer()


@pytest.fixture(scope="session")
def untrained_lab_dir(tmp_path_factory, lab_tokenizer) -> Path:
    """An untrained lab model saved like a hub checkpoint."""
    from effreason.lab.model import build_lab_model

    path = tmp_path_factory.mktemp("untrained_lab")
    build_lab_model(lab_tokenizer, seed=0).save_pretrained(path)
    lab_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def lock_holder():
    """``hold(lock_path)`` starts another process that takes the output lock ``lock_path`` (as a running
    eval or prune would) and returns it; it is killed at the end of the test."""
    import subprocess
    import sys

    procs = []

    def hold(path):
        code = ("import sys, time; from effreason.outputs import output_lock\n"
                "with output_lock(sys.argv[1], 'a test output'):\n    print('held', flush=True); time.sleep(120)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
