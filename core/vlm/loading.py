"""Loading the local model: device, dtype and attention choices, finding the weights, quantisation, and the
model + processor themselves."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings
from core.vlm.base import EngineError, ModelUnavailable, OutOfMemory
from core.vlm.prefix import PrefixStore, plan_prefix_tiers

log = logging.getLogger(__name__)
GIB = 1024**3

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
_WEIGHT_PATTERNS = WEIGHT_PATTERNS


def pick_device(requested: str) -> str:
    """`auto` -> `cuda` when a CUDA GPU is usable, else `cpu`; other values are checked."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(
            f"Setting `device` is {requested!r} but no CUDA GPU is usable here (driver or CUDA build of "
            "torch missing). Set VLSCOPE_DEVICE=auto or cpu."
        )
    return requested


def pick_dtype(requested: str, device: str) -> Any:
    """`auto` -> bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if requested != "auto":
        return table[requested]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def pick_attention(requested: str, device: str) -> str:
    """`auto` -> flash_attention_2 when the flash-attn package is installed on CUDA, else sdpa."""
    if requested != "auto":
        if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise EngineError(
                "Setting `attn_implementation` is flash_attention_2 but the flash-attn package is not "
                "installed. Install the `flash` extra (pip install '.[flash]') or use sdpa."
            )
        return requested
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def dtype_name(dtype: Any) -> str:
    """`bf16`, `fp16` or `fp32` for a torch dtype (its own text for others)."""
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32"}.get(str(dtype), str(dtype))


def resolve_model(model: str, offline: bool) -> Path:
    """Find the model's files: a local folder, the local HF cache, or (when allowed) a download."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelUnavailable(model, f"folder {path} has no config.json (not a saved model)")
        return path
    if not _HUB_ID.match(model):
        raise ModelUnavailable(model, f"folder {path} does not exist and it is not a hub id like 'Qwen/Qwen3-VL-4B-Instruct'")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True, allow_patterns=WEIGHT_PATTERNS))
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        pass
    if offline or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelUnavailable(model, "it is not in the local Hugging Face cache and offline mode is on")
    try:
        return Path(snapshot_download(model, allow_patterns=WEIGHT_PATTERNS))
    except Exception as exc:  # noqa: BLE001
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no answer from the Hugging Face Hub"
        raise ModelUnavailable(
            model, f"it is not in the local Hugging Face cache and could not be fetched ({why})"
        ) from exc


def quantization_config(settings: Settings, device: str, dtype: Any) -> Any:
    """The bitsandbytes config the `quantization` setting asks for (None for `none`); explains what is missing."""
    if settings.quantization == "none":
        return None
    if not device.startswith("cuda"):
        raise EngineError(
            f"Setting `quantization` is {settings.quantization} but bitsandbytes needs a CUDA GPU. "
            "Set VLSCOPE_QUANTIZATION=none on this machine."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise EngineError(
            "Setting `quantization` needs the bitsandbytes package: pip install '.[quant]' (or set it to none)."
        )
    from transformers import BitsAndBytesConfig

    skip = ["visual", "lm_head"]  # the vision tower stays unquantised
    if settings.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=skip,
    )


@dataclass
class Loaded:
    """A loaded model and processor, and how they run."""

    model: Any
    processor: Any
    device: str
    dtype: Any
    attn: str
    quantization: str
    """The `quantization` setting, or what the checkpoint itself brings (e.g. "fp8 (checkpoint; ...)")."""
    path: Path


def load_model(settings: Settings) -> Loaded:
    """Load the weights and processor the settings name; raises ModelUnavailable, OutOfMemory or EngineError."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = resolve_model(settings.model, settings.offline)
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    attn = pick_attention(settings.attn_implementation, device)
    quant = quantization_config(settings, device, dtype)
    if device.startswith("cuda") and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ:
        try:  # segments that grow: a long video's KV cache and activations do not fragment the GPU's memory
            torch.cuda.memory._set_allocator_settings("expandable_segments:True")
        except (AttributeError, RuntimeError) as exc:
            log.info("expandable CUDA memory segments not set: %s", exc)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = device if device != "cuda" else "cuda:0"
    try:
        processor = AutoProcessor.from_pretrained(str(path))
        model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(settings.model, f"loading from {path} failed ({type(exc).__name__}: {exc})") from exc
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory("while loading the weights") from exc
    if quant is None:
        model.to(device)
    model.eval()
    from core.vlm.vision_attention import install

    install(model)  # a video's frame groups in one attention call per layer (same arithmetic)
    from core.vlm.chunked_mlp import install as install_chunked_mlp

    install_chunked_mlp(model)  # a long prompt's MLP a stretch of tokens at a time (same arithmetic, bounded memory)
    label = settings.quantization
    qcfg = getattr(model.config, "quantization_config", None)
    if qcfg is not None and settings.quantization == "none":
        method = qcfg.get("quant_method") if isinstance(qcfg, dict) else getattr(qcfg, "quant_method", "")
        label = f"{method} (checkpoint)"
        if method == "fp8":
            from core.vlm.fp8 import install_offline_fp8_kernel

            # the FP8 matmul kernel normally comes from the hub at the first forward: offline, use ours
            outcome = install_offline_fp8_kernel(force=settings.offline)
            label = f"fp8 (checkpoint; {outcome})"
            log.info("FP8 checkpoint: %s", outcome)
    return Loaded(model=model, processor=processor, device=device, dtype=dtype, attn=attn, quantization=label,
                  path=path)


def cuda_memory(index: int = 0) -> tuple[int, int]:
    """(free, total) bytes this process may still use on CUDA device `index`: the driver's free memory plus what
    PyTorch caches unused, within `torch.cuda.set_per_process_memory_fraction` when one is set."""
    import torch

    free, total = torch.cuda.mem_get_info(index)
    allocated = torch.cuda.memory_allocated(index)
    free += torch.cuda.memory_reserved(index) - allocated  # cached by PyTorch, free for its own tensors
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _i: 1.0)(index)
    if fraction < 1.0:
        total = int(fraction * total)
        free = min(free, total - allocated)
    return max(0, int(free)), int(total)


def sized_store(settings: Settings, device: str, model: Any) -> PrefixStore:
    """The prefix store of a model just loaded on `device`, sized from the GPU memory and RAM free now."""
    import psutil
    import torch

    ram = int(psutil.virtual_memory().available)
    if not device.startswith("cuda"):
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        store = PrefixStore.for_device(device, plan_prefix_tiers(None, None, weights, ram, settings))
    else:
        dev = torch.device(device)
        free, total = cuda_memory(dev.index or 0)
        store = PrefixStore.for_device(device, plan_prefix_tiers(free, total, torch.cuda.memory_allocated(dev), ram,
                                                                 settings))
    store.disk, store.disk_device = disk_tier(settings), device
    return store


def disk_tier(settings: Settings) -> Any:
    """The disk tier of kept prefixes in `cache_dir`/prefixes (setting `prefix_disk_gb`; unset: a fifth of the free
    disk there, at most 64 GiB), or None when it is off or the folder cannot be made."""
    import shutil

    from core.vlm.prefix_disk import PrefixDisk

    if settings.prefix_cache_gb <= 0 or settings.prefix_disk_gb == 0:
        return None
    folder = Path(settings.cache_dir).expanduser() / "prefixes"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        log.warning("kept prefixes will not be written to disk (%s): %s", folder, exc)
        return None
    limit = settings.prefix_disk_gb * GIB if settings.prefix_disk_gb is not None else min(64 * GIB, free // 5)
    return PrefixDisk(folder, int(limit))
