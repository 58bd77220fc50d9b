"""Package structure: the lab stays in the lab.

The library's lower layers learn about the lab only through registries (the lab registers itself as a
benchmark; recipes call the lab's start-model trainers), never by importing it.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOWER_LAYERS = ("evaluation", "generation", "grading", "rewards", "training")


def lab_imports(path: Path) -> list[str]:
    """``file:line`` of every import of ``effreason.lab`` in a module (top level or inside functions)."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        if any(name == "effreason.lab" or name.startswith("effreason.lab.") for name in names):
            hits.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}")
    return hits


def test_the_check_finds_a_lab_import(tmp_path):
    probe = tmp_path / "layer.py"
    probe.write_text("import os\ndef f():\n    from effreason import lab\n    import effreason.lab.task\n"
                     "from effreason.format import THINK_END\n")
    assert lab_imports(probe) == [f"{probe}:3", f"{probe}:4"]


@pytest.mark.parametrize("layer", LOWER_LAYERS)
def test_lower_layers_do_not_import_the_lab(layer):
    files = sorted((ROOT / "effreason" / layer).rglob("*.py"))
    assert files, f"effreason/{layer} has no modules"
    hits = [hit for f in files for hit in lab_imports(f)]
    assert not hits, f"effreason/{layer} imports effreason.lab at {hits}; register through a registry instead"


def test_importing_lower_layers_loads_no_lab_module():
    modules = ["effreason.evaluation.runner", "effreason.evaluation.cli", "effreason.grading", "effreason.rewards",
               "effreason.benchmarks"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in sys.modules if m.startswith('effreason.lab')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
