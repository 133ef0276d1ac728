"""What this installation can do right now: model, device, GPU, OCR engines, cache (for Home and `vlscope info`)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.errors import without_class_names
from core.settings import Settings


@dataclass
class ModelStatus:
    """Whether the configured model's files can be found without loading it."""

    model: str
    available: bool
    location: str | None
    message: str


@dataclass
class GpuSummary:
    name: str
    memory_total_bytes: int


@dataclass
class OcrEngineStatus:
    name: str
    available: bool
    languages: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class Environment:
    """A snapshot of what is installed and usable."""

    python: str
    packages: dict[str, str]
    device: str
    gpus: list[GpuSummary]
    model: ModelStatus
    ocr_engines: list[OcrEngineStatus]
    cache: str = ""
    """where results are kept (`cache_location`)"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def package_versions(names: tuple[str, ...] = ("torch", "torchvision", "transformers", "streamlit", "rapidocr")) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def gpu_summaries() -> list[GpuSummary]:
    """CUDA GPUs torch can see (empty on a machine without a usable NVIDIA GPU)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [
            GpuSummary(torch.cuda.get_device_name(i), int(torch.cuda.get_device_properties(i).total_memory))
            for i in range(torch.cuda.device_count())
        ]
    except Exception:  # noqa: BLE001 - a broken driver means "no GPU" here
        return []


def model_status(settings: Settings) -> ModelStatus:
    """Find the model's files (local folder or HF cache) without loading or downloading anything."""
    from core.vlm.base import ModelUnavailable
    from core.vlm.local import resolve_model

    try:
        path = resolve_model(settings.model, offline=True)
        return ModelStatus(settings.model, True, str(path), f"found at {path}")
    except ModelUnavailable as exc:
        reason = without_class_names(exc.reason)
        if "offline mode is on" in exc.reason and not settings.offline:
            reason = reason.replace(
                "it is not in the local Hugging Face cache and offline mode is on",
                "it is not in the local Hugging Face cache (a download is tried on first use)",
            )
        return ModelStatus(settings.model, False, None, f"Model {settings.model!r} is not available: {reason}. "
                           + download_fix(settings.model))


def download_fix(model: str) -> str:
    """How to get the model's weights, with the one download command VLScope names everywhere."""
    if not _looks_like_hub_id(model):
        return ("Point VLSCOPE_MODEL (setting `model`) at a folder that holds config.json, the *.safetensors "
                "weights and the processor files, or at a hub id such as Qwen/Qwen3-VL-4B-Instruct.")
    return (f"Download it once on a machine with internet access: `hf download {model}`, then copy the Hugging "
            "Face cache (~/.cache/huggingface) here, or point VLSCOPE_MODEL (setting `model`) at a local folder "
            "that holds config.json, the *.safetensors weights and the processor files.")


def _looks_like_hub_id(model: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", model)) and not Path(model).expanduser().is_absolute()


def cache_location(settings: Settings) -> str:
    """Where results are kept, in one line: the one folder (or Redis server) of the dashboard, CLI and API."""
    if settings.cache_backend == "redis":
        from core.cache.redis_store import redact_url

        return (f"the Redis server at {redact_url(settings.redis_url)} (setting `cache_backend`), shared by the "
                "dashboard, the vlscope commands and the API")
    return (f"{settings.cache_dir}, the one folder of the dashboard, the vlscope commands and the API "
            "(setting `cache_dir`, VLSCOPE_CACHE_DIR)")


def tesseract_languages() -> list[str] | None:
    """Languages the installed tesseract has, or None when tesseract is not installed."""
    exe = shutil.which("tesseract")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines()]
    return sorted(ln for ln in lines if ln and not ln.lower().startswith("list of") and " " not in ln)


def ocr_engine_status() -> list[OcrEngineStatus]:
    engines = []
    rapid = importlib.util.find_spec("rapidocr") is not None
    engines.append(
        OcrEngineStatus(
            "rapidocr",
            rapid,
            ["ch_sim", "ch_tra", "en", "ja", "latin"] if rapid else [],
            "models ship inside the wheel" if rapid else "pip install rapidocr onnxruntime",
        )
    )
    langs = tesseract_languages()
    engines.append(
        OcrEngineStatus(
            "tesseract",
            langs is not None,
            langs or [],
            "add a language: apt-get install tesseract-ocr-<lang> (e.g. tesseract-ocr-ara)"
            if langs is not None
            else "apt-get install tesseract-ocr tesseract-ocr-eng",
        )
    )
    return engines


def environment(settings: Settings) -> Environment:
    """Everything `vlscope info` and the Home page show."""
    gpus = gpu_summaries()
    device = settings.device
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    return Environment(
        python=platform.python_version(),
        packages=package_versions(),
        device=device,
        gpus=gpus,
        model=model_status(settings),
        ocr_engines=ocr_engine_status(),
        cache=cache_location(settings),
    )
