"""Visual memory: a video's visual features, computed once and kept, so later questions skip the frames.

The features are what the Qwen3-VL vision tower hands the language model: the merger output (`pooler`, one row
per visual token) and one map per DeepStack layer. They are computed once per video content, sampling plan,
model and precision, and kept in a store (the result cache) as bytes. Any later question, in any process,
rebuilds the prompt's tokens from the stored plan and prefills the language model from the features: no frame
decoding and no vision tower (see docs/design/visual-memory-research.md, path "b1").

Format: safetensors bytes (never pickle) of `pooler` (N, D) and `deepstack.<k>` (N, D), with the plan as JSON in
the header's metadata. Rows are in temporal-group order, and the vision tower attends within each group (two
frames) only, so groups of several encodes of one video at one frame size can be put together exactly (`compose`).
A video is kept in parts of `CHUNK_GROUPS` groups (`split_parts`; each part is such bytes, with its own plan), plus a
small `Manifest` (JSON) written last: the manifest is what a lookup reads, the parts what a load reads, and an
ingest that dies keeps the parts it stored (core.vlm.featurestore resumes there).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from core.vlm.base import InvalidRequest, OutOfMemory
from core.vlm.prefixbuild import PrefixBuilder, prefill  # noqa: F401 - the prefill from features lives there
from core.vlm.types import VideoPart, to_rgb_array

FORMAT_VERSION = 2
"""Bumped when the stored layout changes; older entries then miss (another key) or are refused (`check`).
2: a manifest and parts of `CHUNK_GROUPS` groups (1 was one blob per video)."""
CHUNK_GROUPS = 32
"""Temporal groups (2 frames each) per vision-tower call: exact (attention never crosses a group), bounded memory."""
_ST_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


@dataclass
class FeatureMeta:
    """The plan of one encode: enough to rebuild the prompt's tokens without any frame."""

    grid: list[int]
    """video_grid_thw: temporal groups, patch rows, patch columns."""
    frame_indices: list[int]
    source_fps: float
    total_frames: int
    resized: list[int]
    """(height, width) of the frames the vision tower saw."""
    frame_hw: list[int]
    """(height, width) of the frames it was given (windows of the video are cut to this size)."""
    patch: int
    merge: int
    temporal_patch: int
    dtype: str = ""
    max_pixels_total: int | None = None
    min_pixels_total: int | None = None
    version: int = FORMAT_VERSION

    @property
    def tokens_per_group(self) -> int:
        return self.grid[1] * self.grid[2] // self.merge**2

    def groups(self) -> list[tuple[int, ...]]:
        """The frame numbers of each temporal group (a short last group repeats its last frame, as the processor)."""
        return frame_groups(self.frame_indices, self.temporal_patch)

    def check(self) -> None:
        """Raise ValueError naming what does not fit together."""
        if self.version != FORMAT_VERSION:
            raise ValueError(f"format version {self.version}, this VLScope reads {FORMAT_VERSION}")
        t, h, w = self.grid
        if min(t, h, w, self.patch, self.merge, self.temporal_patch) < 1 or h % self.merge or w % self.merge:
            raise ValueError(f"grid {self.grid} does not fit merge size {self.merge}")
        if len(self.groups()) != t:
            raise ValueError(f"{len(self.frame_indices)} frame numbers for {t} temporal groups")
        if any(b < a for a, b in zip(self.frame_indices, self.frame_indices[1:])) or self.source_fps <= 0:
            raise ValueError("frame numbers out of order or no source fps")
        if list(self.resized) != [h * self.patch, w * self.patch]:
            raise ValueError(f"resized size {self.resized} is not grid {self.grid} x patch {self.patch}")

    @classmethod
    def from_json(cls, text: str) -> "FeatureMeta":
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - names:
            raise ValueError("unknown fields in the plan")
        meta = cls(**data)
        meta.check()
        return meta


@dataclass
class VisualFeatures:
    """One encode: its plan, the merger output (N, D) and the DeepStack maps (N, D) each."""

    meta: FeatureMeta
    pooler: Any
    deepstack: list[Any]


def frame_groups(indices: list[int], temporal: int) -> list[tuple[int, ...]]:
    idx = list(indices) + [indices[-1]] * (-len(indices) % temporal) if indices else []
    return [tuple(idx[k:k + temporal]) for k in range(0, len(idx), temporal)]


# -- bytes ------------------------------------------------------------------------------------
_SAFETENSORS_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def to_buffer(features: VisualFeatures) -> memoryview:
    """The features as safetensors bytes (their plan in the header; no pickle), in one read-only buffer.

    Written here rather than by `safetensors.torch.save`, whose copies hold the interpreter's lock (stretches of
    tens to hundreds of ms per 10-minute video part on the 2-core CI machine), while the model's thread can launch
    no kernel. The tensors' bytes are copied by torch, which lets go of the lock (`benchmarks/feature_store_gil.py`).
    Any safetensors reader reads the result."""
    import torch

    tensors = {"pooler": features.pooler.detach().to("cpu")}
    for k, layer in enumerate(features.deepstack):
        tensors[f"deepstack.{k}"] = layer.detach().to("cpu")
    header: dict[str, Any] = {"__metadata__": {"vlscope": json.dumps(asdict(features.meta))}}
    at = 0
    for name, t in tensors.items():
        kind = _SAFETENSORS_DTYPES.get(str(t.dtype).removeprefix("torch."))
        if kind is None:
            raise ValueError(f"visual features of dtype {t.dtype} cannot be stored")
        n = t.numel() * t.element_size()
        header[name] = {"dtype": kind, "shape": list(t.shape), "data_offsets": [at, at + n]}
        at += n
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the tensors start 8-byte aligned, as safetensors writes them
    base = 8 + len(text)
    buf = torch.empty(base + at, dtype=torch.uint8)
    buf[:base].copy_(torch.frombuffer(bytearray(struct.pack("<Q", len(text)) + text), dtype=torch.uint8))
    for name, t in tensors.items():
        start, end = header[name]["data_offsets"]
        buf[base + start:base + end].copy_(t.contiguous().reshape(-1).view(torch.uint8))
    return memoryview(buf.numpy()).toreadonly()


def to_bytes(features: VisualFeatures) -> bytes:
    """`to_buffer` as bytes (one more copy: the store takes the buffer)."""
    return bytes(to_buffer(features))


def read_header(blob: bytes) -> tuple[FeatureMeta, tuple[str, list[int]], int]:
    """Plan, (dtype, shape) of `pooler` and the number of DeepStack maps, all checked without reading tensors."""
    header, data = _header(blob)
    meta = FeatureMeta.from_json((header.pop("__metadata__", None) or {}).get("vlscope", "null"))
    if set(header) != {"pooler", *(f"deepstack.{k}" for k in range(len(header) - 1))}:
        raise ValueError(f"unexpected tensors {sorted(header)}")
    if max(int(t["data_offsets"][1]) for t in header.values()) != data:
        raise ValueError("the tensor data is truncated or has bytes left over")
    pooler = (header["pooler"]["dtype"], list(header["pooler"]["shape"]))
    if pooler[0] != _ST_DTYPES.get(meta.dtype) or len(pooler[1]) != 2:
        raise ValueError(f"pooler is {pooler}, the plan says {meta.dtype}")
    if pooler[1][0] != meta.grid[0] * meta.tokens_per_group:
        raise ValueError(f"pooler has {pooler[1][0]} rows, grid {meta.grid} needs {meta.grid[0] * meta.tokens_per_group}")
    for name, t in header.items():
        if (t["dtype"], list(t["shape"])) != pooler:
            raise ValueError(f"{name} is {t['dtype']} {t['shape']}, pooler {pooler}")
    return meta, pooler, len(header) - 1


def _header(blob: Any) -> tuple[dict[str, Any], int]:
    """The safetensors header of `blob` (bytes or a buffer) and the length of the data after it."""
    view = memoryview(blob)
    if len(view) < 8:
        raise ValueError("too short to be safetensors")
    size = struct.unpack("<Q", view[:8])[0]
    if size > len(view) - 8:
        raise ValueError("the header runs past the end (truncated)")
    return json.loads(bytes(view[8:8 + size])), len(view) - 8 - size


def from_bytes(blob: Any) -> VisualFeatures:
    """Features back from `to_bytes` (bytes or a read-only buffer, e.g. `CacheBackend.get_buffer`), as tensors over
    the buffer itself: no copy (copy them before writing to them); ValueError when they are not such features."""
    import warnings

    import torch

    meta, _, layers = read_header(blob)
    header, data = _header(blob)
    view = memoryview(blob)
    base = len(view) - data  # the tensors' bytes start after the 8-byte length and the header
    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}

    def tensor(name: str) -> Any:
        spec = header[name]
        start, end = (int(x) for x in spec["data_offsets"])
        dtype = dtypes[spec["dtype"]]
        size = torch.empty(0, dtype=dtype).element_size()
        with warnings.catch_warnings():  # read-only buffer: the tensors are only read (copied to the device)
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(view, dtype=dtype, count=(end - start) // size, offset=base + start)
        return flat.view(*[int(d) for d in spec["shape"]])

    return VisualFeatures(meta, tensor("pooler"), [tensor(f"deepstack.{k}") for k in range(layers)])


# -- frames -> pixels -> features (vision tower) ------------------------------------------------
def video_pixels(processor: Any, part: VideoPart, frame_size: tuple[int, int] | None = None, as_given: bool = False,
                 device: Any = None) -> tuple[Any, FeatureMeta]:
    """A part's frames -> the video processor's pixel values and the plan: sized as the processor sizes them for the
    part's pixel budget, with `frame_size` (height, width) exactly that size (the processor's resize), or with
    `as_given` at the frames' own size (a multiple of patch x merge: a part of a video planned for the model, whose
    frames the processor would leave at their size). `device`: where the processor works (default the CPU)."""
    import numpy as np
    import torch
    from transformers.video_utils import VideoMetadata

    vp = processor.video_processor
    try:
        stack = np.stack([to_rgb_array(f) for f in part.frames])
    except ValueError as exc:
        raise InvalidRequest(f"Video frames could not be used (they must be RGB frames of one size): {exc}") from exc
    total = int(part.total_frames or part.frame_indices[-1] + 1)
    kw: dict[str, Any] = {"videos": [stack], "do_sample_frames": False, "return_tensors": "pt", "video_metadata": [
        VideoMetadata(total_num_frames=total, fps=float(part.source_fps), width=int(stack.shape[2]),
                      height=int(stack.shape[1]), duration=total / float(part.source_fps),
                      frames_indices=[int(i) for i in part.frame_indices])]}
    if hasattr(type(vp), "cap_pixels_per_frame"):
        kw["cap_pixels_per_frame"] = True  # as Runner.process
    if frame_size is not None:
        from torchvision.transforms.v2 import functional as tvF

        if any(s % (vp.patch_size * vp.merge_size) for s in frame_size):
            raise InvalidRequest(f"frame size {frame_size} is not a multiple of {vp.patch_size * vp.merge_size}")
        clip = tvF.resize(torch.from_numpy(stack).permute(0, 3, 1, 2), [int(s) for s in frame_size],
                          interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        kw.update(videos=[clip.permute(0, 2, 3, 1).numpy()], do_resize=False)
    elif as_given:
        factor = vp.patch_size * vp.merge_size
        if stack.shape[1] % factor or stack.shape[2] % factor:
            raise InvalidRequest(f"frames of {stack.shape[2]}x{stack.shape[1]} are not a multiple of {factor}")
        kw["do_resize"] = False
    elif part.max_pixels_total:
        kw["size"] = {"longest_edge": int(part.max_pixels_total), "shortest_edge": int(part.min_pixels_total or 4096)}
    if device is not None and str(device) != "cpu":
        kw["device"] = str(device)
    out = vp(**kw)
    grid = [int(x) for x in out["video_grid_thw"][0]]
    meta = FeatureMeta(grid=grid, frame_indices=[int(i) for i in part.frame_indices], source_fps=float(part.source_fps),
                       total_frames=total, resized=[grid[1] * vp.patch_size, grid[2] * vp.patch_size],
                       frame_hw=[int(stack.shape[1]), int(stack.shape[2])], patch=int(vp.patch_size),
                       merge=int(vp.merge_size), temporal_patch=int(vp.temporal_patch_size),
                       max_pixels_total=part.max_pixels_total, min_pixels_total=part.min_pixels_total)
    meta.check()
    return out["pixel_values_videos"], meta


def _joined(x: Any) -> Any:
    """One tensor from a per-video tuple (transformers >= 5.24 splits per video; 5.17 leaves DeepStack whole)."""
    import torch

    return x if isinstance(x, torch.Tensor) else torch.cat(list(x), dim=0)


def encode(model: Any, pixels: Any, meta: FeatureMeta) -> VisualFeatures:
    """The vision tower over the pixel values, `CHUNK_GROUPS` temporal groups at a time (on the model's device)."""
    import torch

    core = model.model
    device = next(core.visual.parameters()).device
    t, h, w = meta.grid
    rows = h * w  # patches per temporal group
    pooled: list[Any] = []
    layers: list[list[Any]] = []
    try:
        with torch.inference_mode():
            for g in range(0, t, CHUNK_GROUPS):
                n = min(CHUNK_GROUPS, t - g)
                out = core.get_video_features(pixels[g * rows:(g + n) * rows].to(device),
                                              torch.tensor([[n, h, w]], device=device), return_dict=True)
                pooled.append(_joined(out.pooler_output))
                deep = [_joined(layer) for layer in getattr(out, "deepstack_features", None) or []]
                layers = [[x] for x in deep] if not layers else [acc + [x] for acc, x in zip(layers, deep)]
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(f"encoding {len(meta.frame_indices)} frames") from exc
    pooler = torch.cat(pooled)
    return VisualFeatures(replace(meta, dtype=str(pooler.dtype).removeprefix("torch.")), pooler,
                          [torch.cat(chunks) for chunks in layers])


def compose(sources: list[VisualFeatures], part: VideoPart) -> VisualFeatures:
    """The features of `part`'s frame groups, each taken from the stored encode that holds it (later ones win);
    every source must be of one video at one frame size."""
    import torch

    if len(sources) == 1 and sources[0].meta.frame_indices == list(part.frame_indices):
        return sources[0]
    first = sources[0].meta
    table: dict[tuple[int, ...], tuple[int, int]] = {}
    for s, f in enumerate(sources):
        m = f.meta
        if (m.grid[1:], m.merge, m.temporal_patch, len(f.deepstack)) != (first.grid[1:], first.merge,
                                                                       first.temporal_patch, len(sources[0].deepstack)):
            raise InvalidRequest(f"The stored features of {part.features_from} were encoded at different sizes "
                                 f"({first.grid} and {m.grid}); encode windows at the overview's size.")
        table.update({group: (s, g) for g, group in enumerate(m.groups())})
    wanted = frame_groups(list(part.frame_indices), first.temporal_patch)
    missing = [g for g in wanted if g not in table]
    if missing:
        raise InvalidRequest(f"Frames {list(missing[0])} are not among the stored features of {part.features_from}.")
    n = first.tokens_per_group

    def pick(tensors: list[Any]) -> Any:
        return torch.cat([tensors[s][g * n:(g + 1) * n] for s, g in (table[w] for w in wanted)])

    meta = replace(first, grid=[len(wanted), *first.grid[1:]], frame_indices=list(part.frame_indices),
                   source_fps=float(part.source_fps), total_frames=int(part.total_frames or first.total_frames))
    return VisualFeatures(meta, pick([f.pooler for f in sources]),
                          [pick([f.deepstack[k] for f in sources]) for k in range(len(sources[0].deepstack))])


# -- features -> prefix KV (language model only) ------------------------------------------------
class FeaturePrefill(dict):
    """Prefix inputs told by visual features: input_ids, mm_token_type_ids and video_grid_thw (on the device), like
    the processor's; plus the features, or the pixels to encode them from first (then stored under `store_as`)."""

    def __init__(self, tensors: dict[str, Any], meta: FeatureMeta, features: VisualFeatures | None,
                 pixels: Any = None, store_as: str | None = None) -> None:
        super().__init__(tensors)
        self.meta, self.features, self.pixels, self.store_as = meta, features, pixels, store_as
        self.origin = "stored" if features is not None else "encoded"
        """How the request got its visual features: read from the store, or encoded now (and stored)."""


def expand_video(processor: Any, text: str, expansion: str) -> str:
    """`text` with its (first) video placeholder replaced by `expansion`, as the processor itself substitutes it.

    The processor's own substitution, not a plain string replace: since transformers 5.25 the Qwen3-VL processor
    also drops the chat template's `<|vision_start|>`/`<|vision_end|>` around the whole video (every frame pair
    carries its own), where earlier versions kept it; a prompt built by hand would differ from the processor's by
    those two tokens, and so would the model's answer."""
    substitute = getattr(processor, "get_text_with_replacements", None)
    if substitute is None:  # a processor older than the substitution API: a plain replace is what it does
        return text.replace(processor.video_token, expansion, 1)
    return substitute([text], videos_replacements=[expansion])[0][0]


def prompt_inputs(processor: Any, prefix_text: str, meta: FeatureMeta, device: Any) -> dict[str, Any]:
    """The prefix's token ids from the plan alone: the processor's own `<t seconds>` + pads expansion, tokenised."""
    import torch
    from transformers.video_utils import VideoMetadata

    h, w = meta.frame_hw
    grid = torch.tensor([meta.grid])
    video = VideoMetadata(total_num_frames=meta.total_frames, fps=meta.source_fps, width=w, height=h,
                          duration=meta.total_frames / meta.source_fps, frames_indices=list(meta.frame_indices))
    placeholder = processor.replace_video_token({"video_grid_thw": grid, "video_metadata": [video]}, 0)
    ids = processor.tokenizer([expand_video(processor, prefix_text, placeholder)], return_tensors="pt")["input_ids"]
    types = torch.tensor(processor.create_mm_token_type_ids(ids.tolist()), dtype=torch.long)
    return {"input_ids": ids.to(device), "mm_token_type_ids": types.to(device), "video_grid_thw": grid.to(device)}
