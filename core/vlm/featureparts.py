"""A stored video's features in parts: the `Manifest` (what a lookup reads) and the parts of `CHUNK_GROUPS` temporal
groups it names (what a load reads, put together by `assemble`). See core.vlm.features for the bytes of one part."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from core.vlm.features import FORMAT_VERSION, FeatureMeta, VisualFeatures


@dataclass
class Manifest:
    """What a stored video is made of: its whole plan, and its parts (`chunk_groups` temporal groups each)."""

    meta: FeatureMeta
    chunk_groups: int
    parts: int
    width: int
    layers: int

    def spans(self) -> list[tuple[int, int]]:
        """(first group, end group) of each part."""
        return group_spans(self.meta.grid[0], self.chunk_groups)

    def to_bytes(self) -> bytes:
        return json.dumps({"version": FORMAT_VERSION, "meta": asdict(self.meta), "chunk_groups": self.chunk_groups,
                           "parts": self.parts, "width": self.width, "layers": self.layers}).encode("utf-8")

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Manifest":
        """ValueError when `blob` is not a manifest of this format."""
        try:
            data = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the manifest is not JSON ({exc})") from exc
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"manifest of format {data.get('version') if isinstance(data, dict) else '?'}, "
                             f"this VLScope reads {FORMAT_VERSION}")
        meta = FeatureMeta.from_json(json.dumps(data["meta"]))
        made = cls(meta, int(data["chunk_groups"]), int(data["parts"]), int(data["width"]), int(data["layers"]))
        if made.chunk_groups < 1 or made.parts != len(made.spans()) or made.width < 1 or made.layers < 0:
            raise ValueError(f"{made.parts} parts of {made.chunk_groups} groups do not cover grid {meta.grid}")
        return made


def group_spans(groups: int, per: int) -> list[tuple[int, int]]:
    """[(0, per), (per, 2 per), ...] up to `groups`."""
    return [(g, min(groups, g + per)) for g in range(0, groups, per)]


def part_meta(meta: FeatureMeta, g0: int, g1: int) -> FeatureMeta:
    """The plan of groups [g0, g1) of `meta` (their frame numbers, a grid of g1 - g0 groups)."""
    t = meta.temporal_patch
    frames = list(meta.frame_indices[g0 * t:g1 * t])
    return replace(meta, grid=[g1 - g0, *meta.grid[1:]], frame_indices=frames)


def split_parts(features: VisualFeatures, chunk_groups: int) -> list[VisualFeatures]:
    """The features cut into parts of `chunk_groups` temporal groups (views, no copy)."""
    n = features.meta.tokens_per_group
    return [VisualFeatures(part_meta(features.meta, g0, g1), features.pooler[g0 * n:g1 * n],
                           [d[g0 * n:g1 * n] for d in features.deepstack])
            for g0, g1 in group_spans(features.meta.grid[0], chunk_groups)]


def check_part(manifest: Manifest, index: int, part: FeatureMeta) -> None:
    """ValueError unless `part` is part `index` of the video `manifest` describes."""
    g0, g1 = manifest.spans()[index]
    want = part_meta(manifest.meta, g0, g1)
    if asdict(part) != asdict(want):
        raise ValueError(f"part {index} holds frames {part.frame_indices[:2]}... of grid {part.grid}, the manifest "
                         f"expects {want.frame_indices[:2]}... of grid {want.grid}")


def assemble(manifest: Manifest, parts: list[VisualFeatures], device: Any = None) -> VisualFeatures:
    """One video's features from its parts, in one tensor each, on `device` (default: where the parts are)."""
    import torch

    n = manifest.meta.tokens_per_group
    first = parts[0].pooler
    device = device if device is not None else first.device
    rows = manifest.meta.grid[0] * n
    pooler = torch.empty(rows, first.shape[1], dtype=first.dtype, device=device)
    deep = [torch.empty_like(pooler) for _ in range(manifest.layers)]
    for (g0, g1), part in zip(manifest.spans(), parts):
        pooler[g0 * n:g1 * n].copy_(part.pooler, non_blocking=True)
        for k in range(manifest.layers):
            deep[k][g0 * n:g1 * n].copy_(part.deepstack[k], non_blocking=True)
    return VisualFeatures(manifest.meta, pooler, deep)
