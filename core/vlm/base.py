"""The `Engine` interface every model backend implements (local transformers now; a remote
OpenAI-compatible server such as vLLM or SGLang can implement the same methods), its errors,
the streaming handle and the per-request ledger."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from core.errors import UserError
from core.vlm.types import GenerationParams, GenerationResult, Message

if TYPE_CHECKING:
    from core.vlm.prefix import PrefixReport


class EngineError(UserError):
    """A user-facing engine error: the message names the cause and the fix."""


class ModelUnavailable(EngineError):
    """The model's weights cannot be found locally nor fetched."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        fix = (
            f"Download it once on a machine with internet access: `hf download {model}`, then copy the Hugging "
            "Face cache "
            "(~/.cache/huggingface) here, or point VLSCOPE_MODEL (setting `model`) at a local folder "
            "that holds config.json, the *.safetensors weights and the processor files."
        )
        super().__init__(f"Model {model!r} is not available: {reason}. {fix}")


class OutOfMemory(EngineError):
    """The GPU (or host) ran out of memory during a request; the engine stays usable."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "Out of GPU memory while running this request"
            + (f" ({detail})" if detail else "")
            + ". Try fewer frames (lower fps or max frames), a lower resolution (smaller pixel budget), "
            "a shorter time window, or a quantised model (setting `quantization` = 8bit or 4bit)."
        )


class InvalidRequest(EngineError):
    """The request itself cannot be run (bad image, empty messages, ...)."""


@dataclass
class EngineInfo:
    """What an engine is and where it runs."""

    backend: str
    model: str
    loaded: bool
    device: str = ""
    dtype: str = ""
    quantization: str = "none"
    attn_implementation: str = ""
    error: str | None = None
    decoding: str = ""
    """How answers are decoded: "plain generate (<why>)", "plain generate: <why the architecture is not on the fast
    path>" or "fast: <step, kernels, graph>" (local engine, once loaded)."""
    architecture: str = ""
    """The loaded model's architecture in words, e.g. "Qwen3.5: 24 Gated DeltaNet + 8 full-attention layers" or
    "Qwen3-VL MoE: 48 layers, 128 experts (8 per token)" (local engine, once loaded)."""
    prefixes: PrefixReport | None = None
    """The kept video prefixes per tier (entries, bytes, limit) and why the tiers have their sizes (local engine)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RequestRecord:
    """One line of the engine's ledger: what a request cost."""

    started_at: float
    kind: str
    model: str
    status: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    visual_tokens: int = 0
    preprocess_ms: float = 0.0
    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    decode_tokens_per_s: float | None = None
    peak_gpu_memory_bytes: int | None = None
    batch_size: int = 1
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """A bounded, thread-safe list of the latest requests."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._items: deque[RequestRecord] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._items.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._items)


class TextStream(Iterator[str]):
    """Text chunks of an answer as they are generated; `result` is set once it is exhausted.

    Closing the stream (or dropping it, or breaking out of a loop over it) cancels the
    generation so the model is released for the next request.
    """

    def __init__(
        self,
        chunks: Iterator[str],
        cancel: Callable[[], None],
        finish: Callable[[], GenerationResult],
    ) -> None:
        self._chunks = chunks
        self._cancel = cancel
        self._finish = finish
        self._closed = False
        self.result: GenerationResult | None = None

    def __iter__(self) -> "TextStream":
        return self

    def __next__(self) -> str:
        if self.result is not None or self._closed:
            raise StopIteration
        try:
            return next(self._chunks)
        except StopIteration:
            self.result = self._finish()
            self._closed = True
            raise

    def close(self) -> None:
        """Stop generating (if still running) and release the model."""
        if not self._closed:
            self._closed = True
            self._cancel()
            if self.result is None:
                try:
                    self.result = self._finish()
                except EngineError:
                    pass

    def collect(self) -> GenerationResult:
        """Consume the rest of the stream and return the result."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    def __enter__(self) -> "TextStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


class Engine(ABC):
    """A vision-language model backend. One instance serves every session; requests are serialised."""

    ledger: Ledger

    @abstractmethod
    def info(self) -> EngineInfo:
        """What this engine runs and whether it is ready."""

    @abstractmethod
    def stream(self, messages: list[Message], params: GenerationParams | None = None, kind: str = "chat") -> TextStream:
        """Start answering `messages`; iterate the returned stream for text chunks."""

    def generate(
        self, messages: list[Message], params: GenerationParams | None = None, kind: str = "chat"
    ) -> GenerationResult:
        """Answer `messages` and return the whole result."""
        with self.stream(messages, params, kind=kind) as s:
            return s.collect()

    def close(self) -> None:
        """Release the model and its memory."""


def now_ms() -> float:
    return time.perf_counter() * 1000.0
