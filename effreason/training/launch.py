"""Start-up checks of how a recipe was launched."""

from __future__ import annotations

import os
from pathlib import Path
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


def main_process_output(model: str, output_dir: str, recipe: str) -> Path | None:
    """Start a recipe whose work runs in one process (early exit, steering): check the model and the output
    folder, check the launch, and claim ``output_dir`` for ``recipe`` on the main process.

    Returns:
        the output folder on the main process; ``None`` on the others (they have nothing to do).
    """
    from accelerate import PartialState

    from effreason.models import check_model_source
    from effreason.outputs import check_output_path
    from effreason.training.output_dir import claim_output_dir

    check_model_source(model, "model_name_or_path")
    check_output_path(output_dir, "output_dir")
    state = PartialState()
    check_process_group(state)
    if not state.is_main_process:
        return None
    claim_output_dir(output_dir, recipe)
    return Path(output_dir)
