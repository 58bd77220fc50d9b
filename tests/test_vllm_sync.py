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


@pytest.mark.vllm
def test_engine_teardown_keeps_the_trainers_process_group(tmp_path):
    """A colocated engine's shutdown (end of L-GRPO stage 1) must not destroy the launcher's default group."""
    import torch.distributed as dist
    import vllm.distributed.parallel_state as parallel_state

    from effreason.training.vllm_sync import keep_trainer_process_group

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        keep_trainer_process_group()
        keep_trainer_process_group()  # installed once
        parallel_state.destroy_distributed_environment()
        assert dist.is_initialized()
        dist.barrier()  # what stage 2's main_process_first() does first
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
