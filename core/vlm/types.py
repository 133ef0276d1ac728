"""Data the engines take and give: chat messages, generation parameters, results and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

Role = Literal["system", "user", "assistant"]


@dataclass
class TextPart:
    """Plain text inside a message."""

    text: str
    type: Literal["text"] = "text"


@dataclass
class ImagePart:
    """One image: a PIL image, an HxWx3 uint8 RGB numpy array, or a path to an image file."""

    image: Any
    type: Literal["image"] = "image"
    cache_key: str | None = None
    """Set it (e.g. the image's content hash) to keep its KV cache for follow-up questions."""


@dataclass
class VideoPart:
    """A video clip as decoded frames plus where they came from.

    `frame_indices` are the frames' numbers in the source file and `source_fps` its frame
    rate, so the model sees the real `<t seconds>` of each pair of frames (time = index / fps).
    Frames are HxWx3 uint8 RGB arrays (or PIL images) of one size. `max_pixels_total` /
    `min_pixels_total` override the processor's pixel budget over all frames (None: the
    model's own video budget).
    """

    frames: list[Any]
    frame_indices: list[int]
    source_fps: float
    total_frames: int | None = None
    max_pixels_total: int | None = None
    min_pixels_total: int | None = None
    type: Literal["video"] = "video"

    cache_key: str | None = None
    """Set it (e.g. content hash + sampling plan) to keep this video's KV cache for follow-up questions; on a
    local engine with a feature store its visual features are also kept under it (encoded once, any process)."""
    features_from: tuple[str, ...] = ()
    """Instead of frames (`frames` empty): the `cache_key`s of earlier videos whose stored visual features this
    part is made of, the temporal groups (frame pairs) of `frame_indices` each taken from the encode holding it."""

    def __post_init__(self) -> None:
        self.features_from = tuple(self.features_from)
        if self.features_from:
            if self.frames or not self.frame_indices:
                raise ValueError("a feature-backed VideoPart has frame indices and no frames")
            if not self.cache_key:  # its kept prefix is named by what it is made of
                self.cache_key = "features:" + "|".join(self.features_from) + f"@{self.frame_indices}"
        elif len(self.frames) == 0:
            raise ValueError("a VideoPart needs at least one frame (or stored features: `features_from`)")
        elif len(self.frames) != len(self.frame_indices):
            raise ValueError(
                f"a VideoPart has {len(self.frames)} frames but {len(self.frame_indices)} frame indices"
            )
        if not self.source_fps or self.source_fps <= 0:
            raise ValueError("a VideoPart needs the source fps (> 0) to compute timestamps")
        if any(b < a for a, b in zip(self.frame_indices, self.frame_indices[1:])):
            raise ValueError("VideoPart frame indices must be in increasing order")

    @property
    def timestamps(self) -> list[float]:
        """Seconds of each frame in the source file."""
        return [i / self.source_fps for i in self.frame_indices]

    def pair_timestamps(self, temporal_patch: int = 2) -> list[float]:
        """The `<t seconds>` values the model sees: mean time of each group of `temporal_patch` frames."""
        idx = list(self.frame_indices)
        while len(idx) % temporal_patch:
            idx.append(idx[-1])
        times = [i / self.source_fps for i in idx]
        return [(times[k] + times[k + temporal_patch - 1]) / 2 for k in range(0, len(times), temporal_patch)]


Part = Union[TextPart, ImagePart, VideoPart]


@dataclass
class Message:
    """One chat turn; `content` is a string or a list of parts."""

    role: Role
    content: str | list[Part]

    def parts(self) -> list[Part]:
        return [TextPart(self.content)] if isinstance(self.content, str) else list(self.content)


def user(*items: str | Part) -> Message:
    """A user message from strings and parts, e.g. `user(ImagePart(img), "What is this?")`."""
    return Message("user", [TextPart(i) if isinstance(i, str) else i for i in items])


@dataclass
class GenerationParams:
    """Sampling parameters; defaults are the Qwen3-VL Instruct model card's. temperature 0 = greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    repetition_penalty: float = 1.0
    presence_penalty: float = 1.5
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0 (0 means greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0 (0 disables it)")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @classmethod
    def greedy_defaults(cls, max_new_tokens: int = 512) -> "GenerationParams":
        """Deterministic decoding (temperature 0, no presence penalty)."""
        return cls(max_new_tokens=max_new_tokens, temperature=0.0, presence_penalty=0.0)


@dataclass
class Metrics:
    """What one request cost. Times in milliseconds; memory in bytes (None on CPU)."""

    preprocess_ms: float = 0.0
    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    ttft_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    decode_tokens_per_s: float | None = None
    visual_tokens: int = 0
    reused_prefix_tokens: int = 0
    peak_gpu_memory_bytes: int | None = None
    visual_features: str = ""
    """Where the video's visual features came from: "stored" (no vision tower), "encoded" (now, and stored), or ""
    (not through the visual memory, or its kept prefix KV was reused)."""
    decode_path: str = ""
    """"plain" (transformers generate), "static+graph" (CUDA graph replay) or "static" (same loop, eager)."""
    batch_size: int = 1
    """How many requests were decoded together with this one (itself included)."""


@dataclass
class GenerationResult:
    """An answer with its token counts and metrics."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length", "cancelled"]
    metrics: Metrics = field(default_factory=Metrics)
    model: str = ""
    reasoning: str = ""
    """What a thinking model (Qwen3-VL-*-Thinking, Qwen3.5 in thinking mode) wrote before `</think>`; `text` is then
    the answer after it alone (times in the reasoning are not the answer's). Empty for other models."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_reasoning(ids: list[int], think_end: int | None, decode: Any) -> tuple[str, str]:
    """(answer, reasoning) of generated token ids: a thinking model's reasoning ends at its last `</think>` token
    (`think_end`; None when the tokenizer has none): the answer is what follows. `decode(ids) -> str`."""
    if think_end is None or think_end not in ids:
        return decode(ids), ""
    cut = len(ids) - 1 - ids[::-1].index(think_end)
    reasoning = decode(ids[:cut]).strip()
    return decode(ids[cut + 1:]).strip(), reasoning.removeprefix("<think>").strip()


def to_rgb_array(image: Any) -> np.ndarray:
    """An HxWx3 uint8 array from a PIL image, an array or a path; raises ValueError with the cause."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as im:
                return np.array(im.convert("RGB"))
        except FileNotFoundError as exc:
            raise ValueError(f"image file {image} does not exist") from exc
        except (OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"image file {image} could not be read: {exc}") from exc
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"image arrays must be HxWx3 (RGB), got shape {arr.shape}")
        if arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
                arr = arr * 255.0
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr)
    raise ValueError(f"unsupported image type {type(image).__name__}; give a PIL image, a numpy array or a path")
