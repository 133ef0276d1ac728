"""One typed settings object for the whole product.

Values come, lowest priority first, from the defaults below, an optional TOML file
(``vlscope.toml`` in the working folder, or the file named by ``VLSCOPE_CONFIG``), and
environment variables named ``VLSCOPE_<FIELD>`` (e.g. ``VLSCOPE_MODEL``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from core.errors import UserError

ENV_PREFIX = "VLSCOPE_"
DEFAULT_CONFIG_FILE = "vlscope.toml"
CACHE_DIR_SHOWN = "$XDG_DATA_HOME/vlscope/cache"
"""How the default cache folder is written in the docs (the settings table)."""


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """The result cache's default folder, the same for the dashboard, the CLI and the API wherever they start:
    the user's data folder, ``$XDG_DATA_HOME/vlscope/cache`` (``~/.local/share/vlscope/cache`` when
    XDG_DATA_HOME is unset or not absolute, as the XDG base directory rules say)."""
    environ = dict(os.environ) if environ is None else environ
    base = environ.get("XDG_DATA_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "vlscope" / "cache"


class SettingsError(UserError, ValueError):
    """A setting has a value that cannot be used; the message names the setting and the fix."""


class Settings(BaseModel):
    """Every setting of VLScope, with its default and meaning (the README table is built from this)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    model: str = Field(
        "Qwen/Qwen3-VL-4B-Instruct",
        description="Hugging Face model id (local HF cache first) or a local folder holding the weights.",
    )
    device: str = Field("auto", description="`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`.")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Weights precision: `auto` is bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."
    )
    quantization: Literal["none", "8bit", "4bit"] = Field(
        "none",
        description="bitsandbytes 8-bit or 4-bit (nf4) quantisation of the language model (vision tower stays "
        "unquantised; CUDA only, needs the `quant` extra). FP8 checkpoints load as they are with `none`.",
    )
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "eager"] = Field(
        "auto", description="Attention kernel: `auto` is flash-attention when installed on CUDA, else sdpa."
    )
    fast_decode: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Static KV cache with the decode step replayed as a CUDA graph (much faster decoding; for "
        "Qwen3-VL a lean decode step with VLScope's Triton kernels: 294 tokens/s at batch 1 on an H200, 4B, bf16); "
        "`auto` uses it on CUDA, `off` uses plain `generate`. Falls back to plain steps if capture fails.",
    )
    compile_decode: bool = Field(
        False,
        description="Also compile the fast path's decode step with torch.compile. With the Triton kernels it no "
        "longer pays (H200, 4B, batch 1: 295 vs 294 tokens/s after a short prompt, 248 vs 260 after a 600-frame "
        "video) and the first requests compile for 23 to 33 s each; kept for models the lean step does not cover.",
    )
    max_batch_size: int = Field(
        4, ge=1, le=64, description="Requests arriving together (same sampling settings, no kept video prefix) are "
        "decoded as one batch of at most this many, on the fast path; 1 serves them one by one.",
    )
    batch_window_ms: int = Field(
        10, ge=0, le=1000, description="How long the model waits for more requests to join a batch, in milliseconds."
    )
    max_new_tokens: int = Field(512, ge=1, le=32768, description="Default answer length cap, in tokens.")
    prefill_chunk_tokens: int = Field(
        8192, ge=0, le=262144, description="The prompt is prefilled in chunks of this many tokens, so the prefill's "
        "activation memory stays bounded however long the video (the video planner counts one chunk); 0: the whole "
        "prompt in one pass.",
    )
    plan_memory_fraction: float = Field(
        0.9, gt=0, le=1, description="Share of the free GPU memory (or available RAM on the CPU) a video's default "
        "plan may fill by its estimate; the rest is slack for what the estimate does not see.",
    )
    prefix_cache_gb: float = Field(
        1024.0, ge=0, description="Most memory kept for videos' prefix KV caches (so follow-up questions skip "
        "re-encoding), GPU and host tiers together, in GiB; each tier is sized from the memory free after loading "
        "(`prefix_gpu_gb`, `prefix_host_gb`). 0 turns reuse off.",
    )
    prefix_gpu_gb: float | None = Field(
        None, ge=0, description="GPU tier of kept video prefixes, in GiB (on a CPU engine: its one tier, in RAM). "
        "Unset: what is free after the weights minus a working reserve of max(4 GiB, 20% of the card) for the "
        "largest prefill (on CPU: half of the RAM available minus 4 GiB).",
    )
    prefix_host_gb: float | None = Field(
        None, ge=0, description="Pinned host-RAM tier that least recently used video prefixes spill to from the GPU "
        "(copied back when asked about again), in GiB; 0 turns spilling off. Unset: half of the RAM available "
        "after loading minus 4 GiB.",
    )
    prefix_disk_gb: float | None = Field(
        None, ge=0, description="Disk tier of kept video prefixes (in `cache_dir`/prefixes), in GiB: a video's "
        "prefix KV cache is also written there, so after a restart (or in another process) a question on it skips "
        "the prefill; least recently used first out; 0 turns it off. Unset: a fifth of the free disk there, at "
        "most 64 GiB.",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Folder of the disk result cache (created owner-only), uploads and players' copies; one folder "
        "for the dashboard, the CLI and the API wherever they are started (default: the user's data folder, "
        "`~/.local/share/vlscope/cache` when XDG_DATA_HOME is unset). A relative path is taken from the folder "
        "the settings are read in.",
        json_schema_extra={"shown_default": CACHE_DIR_SHOWN},
    )
    cache_size_limit_gb: float = Field(
        20.0, gt=0, description="Size limit of the result cache in GiB; least recently stored entries go first. Uploads and "
        "players' small copies have a budget of the same size of their own (least recently used first; never a file "
        "in use)."
    )
    cache_backend: Literal["disk", "redis"] = Field(
        "disk",
        description="Where results are cached: `disk` (embedded, in `cache_dir`) or `redis` (a Redis server at "
        "`redis_url` shared by the team; bound its size with `maxmemory` and `maxmemory-policy allkeys-lru`).",
    )
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis server of the shared result cache (with `cache_backend` `redis`), "
        "e.g. `redis://:PASSWORD@HOST:6379/0`.",
    )
    max_upload_mb: int = Field(2048, ge=1, description="Largest file accepted through the browser upload, in MiB.")
    media_root: Path | None = Field(
        None,
        description="Server folder whose files the dashboard can open by path (files too large to upload); nothing "
        "outside it (no `..`, no symlink leading out) can be opened. Unset: opening by path is off.",
    )
    max_image_pixels: int = Field(
        178_956_970, ge=1, description="Images with more pixels than this are refused (decompression-bomb guard)."
    )
    offline: bool = Field(
        False, description="Never try to download model weights; use the local HF cache or a local folder only."
    )
    engine: Literal["local", "remote"] = Field(
        "local",
        description="`local`: run the model in this process (transformers); `remote`: send requests to an "
        "OpenAI-compatible server (vLLM, SGLang, `transformers serve`) at `remote_url`.",
    )
    remote_url: str = Field(
        "http://localhost:8000/v1", description="Base URL of the OpenAI-compatible API (with `engine` `remote`)."
    )
    remote_model: str = Field(
        "", description="Model name on the remote server; empty: the first model the server lists."
    )
    remote_api_key: SecretStr | None = Field(
        None, description="API key sent to the remote server as a Bearer token (never printed or logged)."
    )
    remote_timeout_s: float = Field(
        120.0, gt=0, description="Seconds the remote server may take to answer (and between streamed chunks)."
    )
    decode_kernels: Literal["auto", "torch", "triton"] = Field(
        "auto",
        description="Kernels of the fast path's lean decode step: `auto` runs VLScope's Triton kernels on CUDA with "
        "bf16/fp16 weights (PyTorch operations elsewhere), `torch` always PyTorch operations, `triton` the Triton "
        "kernels also on the CPU under Triton's interpreter (TRITON_INTERPRET=1, for tests).",
    )
    profile_fast_decode: bool = Field(
        False,
        description="Time each phase of the fast path (prefill, kept prefix, decode) with the GPU synchronised "
        "between them, for benchmarks; slows requests down.",
    )
    speech_engine: Literal["auto", "whisper", "qwen3_asr", "pocketsphinx"] = Field(
        "auto",
        description="What transcribes speech: `auto` is the `speech_model` checkpoint when its weights are on this "
        "machine (Whisper, or Qwen3-ASR with transformers >= 5.24), else PocketSphinx (offline, English only, no "
        "download); `whisper` / `qwen3_asr` insist on that model; `pocketsphinx` always the offline engine.",
    )
    speech_model: str = Field(
        "openai/whisper-large-v3-turbo",
        description="Speech model: a Hugging Face id (local HF cache first) or a local folder with a Whisper or "
        "Qwen3-ASR checkpoint (with `speech_engine` `qwen3_asr` and this left as it is: Qwen/Qwen3-ASR-1.7B-hf).",
    )
    speech_device: str = Field(
        "auto", description="Where the speech model runs: `auto` (CUDA when present, else CPU), `cpu`, `cuda` or "
        "`cuda:N`; fp16/bf16 on a GPU.",
    )

    auth_file: Path | None = Field(
        None,
        description="TOML file of the team's users: hashed passwords for the dashboard's sign-in and hashed API "
        "bearer tokens (manage it with `vlscope users add NAME` and `vlscope users token NAME`). Set: the dashboard "
        "asks for sign-in and the API wants `Authorization: Bearer TOKEN`.",
    )
    auth_oidc: bool = Field(
        False,
        description="Sign in to the dashboard through Streamlit's own `st.login` with the OpenID Connect provider "
        "configured under `[auth]` in `.streamlit/secrets.toml` (needs the `Authlib` package).",
    )
    allow_open_network: bool = Field(
        False,
        description="Allow the dashboard or the API to listen beyond localhost with no sign-in configured (only "
        "for a network where everyone may upload, run the model and delete results).",
    )
    heavy_work_memory_gb: float | None = Field(
        None,
        gt=0,
        description="RAM that heavy work running at once (decoding large images, OCR, video analysis) may hold, in "
        "GiB; work beyond it waits its turn. Unset: half of the RAM available when VLScope starts.",
    )
    busy_timeout_s: float = Field(
        60.0,
        ge=0,
        description="How long heavy work waits for memory held by other work before it is refused with a 'busy' "
        "message (try again later), in seconds.",
    )

    @field_validator("device", "speech_device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("must be auto, cpu, cuda or cuda:N")

    @field_validator("cache_dir")
    @classmethod
    def _absolute_cache_dir(cls, value: Path) -> Path:
        # one absolute folder: a process that changes its working folder (the dashboard) still finds it
        return Path(os.path.abspath(Path(value).expanduser()))

    @property
    def model_is_local_folder(self) -> bool:
        """True when `model` names an existing folder rather than a hub id."""
        return Path(self.model).expanduser().is_dir()


def _env_values(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    fields = Settings.model_fields
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name in fields:
            values[name] = raw
    return values


def config_file_path(environ: dict[str, str] | None = None) -> Path | None:
    """The TOML settings file in use, or None when there is none."""
    environ = dict(os.environ) if environ is None else environ
    named = environ.get(ENV_PREFIX + "CONFIG")
    if named:
        return Path(named).expanduser()
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_settings(environ: dict[str, str] | None = None, config_file: Path | None = None) -> Settings:
    """Build the settings from defaults, the TOML file and `VLSCOPE_*` variables.

    Raises SettingsError naming the offending setting and where it came from.
    """
    environ = dict(os.environ) if environ is None else environ
    path = config_file or config_file_path(environ)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"Settings file {path} does not exist; create it or unset VLSCOPE_CONFIG.") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"Settings file {path} is not valid TOML: {exc}") from exc
        # Accept either top-level keys or a [vlscope] table.
        file_values = dict(data.get("vlscope", data))
        folder = file_values.get("cache_dir")
        if isinstance(folder, str) and folder and not Path(folder).expanduser().is_absolute():
            # a folder written in the file is read from where the file is, whoever reads it from where
            file_values["cache_dir"] = str(path.resolve().parent / folder)
    merged = {**file_values, **_env_values(environ)}
    merged.setdefault("cache_dir", default_cache_dir(environ))  # the user's data folder of *this* environment
    try:
        return Settings(**merged)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            source = f"environment variable {ENV_PREFIX}{name.upper()}" if name in _env_values(environ) else (
                f"{path}" if path else "defaults"
            )
            problems.append(f"setting `{name}` ({source}): {err['msg']}")
        raise SettingsError("Invalid settings: " + "; ".join(problems)) from exc


def settings_table_markdown() -> str:
    """A Markdown table of every setting: variable, default and meaning (used for the README)."""
    rows = ["| Setting (env var) | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        shown = str(extra["shown_default"]) if "shown_default" in extra else "unset" if default is None else str(default)
        rows.append(f"| `{ENV_PREFIX}{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(rows)
