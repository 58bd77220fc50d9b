import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="needs the vllm module (bash launch/install_vllm.sh)")


@pytest.mark.slow
@pytest.mark.vllm
def test_grpo_colocate_weight_sync_on_cpu_matches_hf():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("vllm_sync_check.py"))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert "RESULT: PASS" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
