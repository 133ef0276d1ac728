"""Kept prefixes: the KV cache of a request's visual input, kept so follow-up questions skip re-encoding it.

A request whose one visual input has a `cache_key` is split after that input (`split_prefix`); the prefix's
KV cache is computed once and kept in a `PrefixStore`, bounded in bytes, least recently used out first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from core.vlm.types import VideoPart


@dataclass
class Prefix:
    """A kept prefix: its token ids, grids, KV cache and the rope deltas generate needs with it."""

    key: str
    input_ids: Any
    mm_token_type_ids: Any
    grids: dict[str, Any]
    kv: Any
    rope_deltas: Any
    nbytes: int
    cache_kwarg: str



@dataclass
class PrefixPlan:
    """How one request uses a kept prefix: the kept one (`cached`), or the prefix inputs to compute it from."""

    key: str
    cached: Prefix | None
    prefix_inputs: Any
    """The processor's tensors of the prefix (visual input included) when it is not kept yet."""
    suffix_ids: Any
    """The token ids after the prefix (the question), (1, n) on the model's device."""


def cache_nbytes(kv: Any) -> int:
    """Bytes of the tensors a KV cache object holds (walking its attributes a few levels deep)."""
    import torch

    total = 0
    seen: set[int] = set()

    def visit(obj: Any, depth: int = 0) -> None:
        nonlocal total
        if depth > 4 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
        elif hasattr(obj, "__dict__"):
            for item in vars(obj).values():
                visit(item, depth + 1)

    visit(kv)
    return total



def split_prefix(text: str, visual_parts: list[Any], material: str) -> tuple[str, str, str] | None:
    """(cache key, prefix text, suffix text) when the request's one visual input asks to be kept, else None.

    `material` names what else the kept cache depends on (model and dtype); it goes into the key.
    """
    if len(visual_parts) != 1 or not visual_parts[0].cache_key:
        return None
    pad = "<|video_pad|>" if isinstance(visual_parts[0], VideoPart) else "<|image_pad|>"
    at = text.find(pad)
    end_tag = "<|vision_end|>"
    close = text.find(end_tag, at)
    if at < 0 or close < 0:
        return None
    cut = close + len(end_tag)
    prefix, suffix = text[:cut], text[cut:]
    key = f"{material}|{visual_parts[0].cache_key}|{prefix}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest(), prefix, suffix


class PrefixStore:
    """Kept prefix KV caches, bounded in bytes, least recently used evicted first. Thread-safe."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._items: OrderedDict[str, Prefix] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Prefix | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, item: Prefix) -> None:
        with self._lock:
            self._items[item.key] = item
            self._items.move_to_end(item.key)
            while self._items and self.nbytes > self.limit_bytes:
                self._items.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
