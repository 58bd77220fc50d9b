"""Start-up check of how a recipe was launched."""

from __future__ import annotations

import os
from typing import Any


def check_process_group(state: Any) -> None:
    """Refuse a launch whose processes did not join one process group.

    ``accelerate launch --config_file launch/accelerate/<file> --num_processes 2`` on a machine without
    CUDA starts two processes (``WORLD_SIZE=2``) whose accelerate state holds one process: with
    ``multi_gpu.yaml`` (``DistributedType.NO``) both would train the whole run into the same
    ``output_dir``; with ``zero2`` / ``zero3.yaml`` DeepSpeed joins them but accelerate (and the
    trainer's data split) still counts one.

    Args:
        state: accelerate's ``PartialState``.

    Raises:
        ValueError: naming the launched and the joined process counts and what to launch instead.
    """
    launched = os.environ.get("WORLD_SIZE", "1")
    if launched.isdigit() and int(launched) > state.num_processes:
        raise ValueError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but accelerate joined "
            f"{state.num_processes} ({state.distributed_type}): each would train alone into the same "
            "output_dir. Without GPUs, the launch/accelerate files run one process only: use "
            f"`torchrun --nproc_per_node {launched} recipes/<recipe>.py ...` (gloo) for {launched}")
