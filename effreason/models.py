"""Resolve and load causal LMs: hub ids, local paths, the shipped lab model, LoRA adapters."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: The shipped overthinker (rebuild it with ``effreason lab bootstrap --out effreason/lab/checkpoint``).
LAB_MODEL_DIR = Path(__file__).parent / "lab" / "checkpoint"

#: The lab's base model that answers without thinking (``recipes/lora_adapter.py``; effreason.lab.trainers.direct).
LAB_BASE_DIR = Path(__file__).parent / "lab" / "base_checkpoint"
_ALIASES = {"lab": LAB_MODEL_DIR, "lab_base": LAB_BASE_DIR}
_REBUILD = {"lab": "effreason lab bootstrap --out {path}", "lab_base": "effreason lab bootstrap-base --out {path}"}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                    "spiece.model")
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Map an alias (``lab``, ``lab_base``) to its directory; pass local paths and hub ids through."""
    key = str(name_or_path)
    if key in _ALIASES:
        path = _ALIASES[key]
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"the {key!r} model is missing at {path}; rebuild it with `{_REBUILD[key].format(path=path)}`"
            )
        return str(path)
    return key


def check_model_source(name_or_path: str | os.PathLike, what: str = "model", *, tokenizer_only: bool = False,
                       adapter: bool = False) -> str:
    """Check a model (or tokenizer, or LoRA adapter) before loading anything, in milliseconds.

    A local folder must hold what ``from_pretrained`` reads: ``config.json``, the weights (a
    ``model.safetensors`` whose header and size agree, or the shards its index lists) and tokenizer files
    (a PEFT adapter folder passes as a model). A name that is no local path but looks like a Hub id must, in
    offline mode (``HF_HUB_OFFLINE=1``), be in the Hugging Face cache; online, the download names it if it
    fails.

    Args:
        what: how the user named it (``--model``, ``model_name_or_path``), for the message.
        tokenizer_only: only the tokenizer is loaded from it.
        adapter: it is a PEFT adapter (``adapter_config.json`` and its weights).

    Returns:
        The resolved path or id (``lab`` -> the shipped checkpoint).

    Raises:
        UserError: naming the path or id, what is missing, and what to do.
    """
    from effreason.errors import UserError
    from effreason.sources import looks_like_hub_id

    try:
        text = resolve_model_path(name_or_path)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    path = Path(text).expanduser()
    if path.is_dir():
        _check_model_dir(path, f"{what} {text}", tokenizer_only=tokenizer_only, adapter=adapter)
    elif path.exists():
        raise UserError(f"{what} {text} is a file; give the model's folder (config.json, weights, tokenizer)")
    elif text.startswith(("/", ".", "~")) or not looks_like_hub_id(text):
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise UserError(f"{what} {text}: no such folder{where}; give a model folder or a Hub id")
    else:
        _check_hub_id(text, what, tokenizer_only=tokenizer_only, adapter=adapter)
    return text


def _check_model_dir(path: Path, label: str, *, tokenizer_only: bool, adapter: bool) -> None:
    from effreason.errors import UserError

    files = {p.name for p in path.iterdir()}
    if not files:
        raise UserError(f"{label} is an empty folder; give a model folder (as save_pretrained writes it) or a Hub id")
    if adapter or ("adapter_config.json" in files and "config.json" not in files and not tokenizer_only):
        if "adapter_config.json" not in files:
            raise UserError(f"{label} has no adapter_config.json: not a PEFT (LoRA) adapter folder")
        weights = [f for f in _ADAPTER_WEIGHTS if f in files]
        if not weights:
            raise UserError(f"{label} has no adapter weights ({' or '.join(_ADAPTER_WEIGHTS)})")
        if weights[0].endswith(".safetensors"):
            _check_safetensors(path / weights[0], label)
        return
    if not any(f in files for f in _TOKENIZER_FILES):
        raise UserError(f"{label} has no tokenizer files (tokenizer.json / tokenizer_config.json); save the "
                        "tokenizer there (tokenizer.save_pretrained) or give another folder")
    if tokenizer_only:
        return
    if "config.json" not in files:
        raise UserError(f"{label} has no config.json: not a Hugging Face model folder (as save_pretrained writes it)")
    if not any(f in files for f in _WEIGHT_FILES):
        raise UserError(f"{label} has no weights (model.safetensors or pytorch_model.bin); copy or save them there")
    if "model.safetensors" in files:
        _check_safetensors(path / "model.safetensors", label)
    elif "model.safetensors.index.json" in files:
        try:
            index = json.loads((path / "model.safetensors.index.json").read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{label}: model.safetensors.index.json is unreadable (no weight_map); save the "
                            "model again") from None
        for shard in shards:
            if not (path / shard).is_file():
                raise UserError(f"{label}: the weight shard {shard} listed in model.safetensors.index.json is "
                                "missing; copy it there")
            _check_safetensors(path / shard, label)


def _check_safetensors(file: Path, label: str) -> None:
    """The header of a safetensors file parses and its tensors end where the file ends (no data read)."""
    from effreason.errors import UserError

    size = file.stat().st_size
    try:
        with file.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little") if size >= 8 else -1
            if not 2 <= header_len <= size - 8:
                raise ValueError("no valid header")
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        problem = str(e) if str(e) == "no valid header" else "unreadable header"
        raise UserError(f"{label}: {file.name} is corrupt ({problem}); download or save the model again") from None
    if 8 + header_len + end != size:
        raise UserError(f"{label}: {file.name} is truncated or corrupt ({size} bytes, its header says "
                        f"{8 + header_len + end}); download or save the model again")


def _check_hub_id(repo_id: str, what: str, *, tokenizer_only: bool, adapter: bool) -> None:
    from huggingface_hub import constants, try_to_load_from_cache

    from effreason.errors import UserError

    if not constants.is_offline_mode():
        return  # online: from_pretrained downloads it, or fails naming the id
    wanted = (("adapter_config.json",) if adapter else ("tokenizer_config.json", "tokenizer.json") if tokenizer_only
              else ("config.json",))
    if any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in wanted):
        return
    raise UserError(f"{what} {repo_id!r} is not a local folder, and offline (HF_HUB_OFFLINE=1) it is not in the "
                    f"Hugging Face cache ({constants.HF_HUB_CACHE}); download it with network "
                    f"(`hf download {repo_id}`) or give a local folder")


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a tokenizer, left-padded for batched generation, with a pad token (``check_model_source`` first)."""
    tok = AutoTokenizer.from_pretrained(check_model_source(name_or_path, "tokenizer", tokenizer_only=True))
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@contextlib.contextmanager
def outside_zero3() -> Iterator[None]:
    """Load and run whole models in a process that a DeepSpeed ZeRO-3 trainer set up.

    While a ZeRO-3 ``TrainingArguments`` lives, transformers builds every ``from_pretrained`` model
    partitioned (``deepspeed.zero.Init``: empty weights outside the engine, "'weight' must be 2-D")
    and makes ``generate`` wait for the other ranks (``synced_gpus``). Evaluation and adapter merging
    run in the main process alone, on whole weights. A no-op without DeepSpeed.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    if config is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(config)


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    adapter: str | os.PathLike | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    merge_adapter: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (alias, path or hub id) and its tokenizer, optionally with a LoRA adapter.

    Args:
        adapter: path of a PEFT adapter to apply (merged into the weights for fast generation).
        merge_adapter: ``False`` keeps the adapter apart (a ``PeftModel``), so it can be switched off per
            batch (``with model.disable_adapter():``, the routed reasoning adapter).
        dtype: ``"float32"``, ``"bfloat16"``, ... or a torch dtype; default float32 on CPU, bf16 on CUDA.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
    """
    path = check_model_source(name_or_path)
    if adapter is not None:
        check_model_source(adapter, "adapter", adapter=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    tokenizer = load_tokenizer(path)
    with outside_zero3():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter))
            if merge_adapter:
                model = model.merge_and_unload()
                logger.info("merged adapter %s into %s", adapter, path)
    model.to(device).eval()
    return model, tokenizer
