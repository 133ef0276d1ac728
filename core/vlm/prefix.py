"""Kept prefixes: the KV cache of a request's visual input, kept so follow-up questions skip re-encoding it.

A request whose one visual input has a `cache_key` is split after that input (`split_prefix`); the prefix's
KV cache is computed once and kept in a `PrefixStore`: on the GPU in the memory left after the weights and a
working reserve, spilled to pinned host RAM least recently used first, and copied back when asked about again
(`plan_prefix_tiers` in core.vlm.prefix_tiers sizes the tiers). On a CPU engine there is one tier, in RAM.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from core.vlm.prefix_tiers import (GIB, HOST_FLOOR, HOST_SHARE, RESERVE_FLOOR, RESERVE_SHARE, TierPlan,  # noqa: F401
                                   _gib, _size, plan_prefix_tiers)
from core.vlm.types import VideoPart

log = logging.getLogger(__name__)


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




def map_cache(kv: Any, fn: Callable[[Any], Any]) -> Any:
    """A copy of KV cache `kv` with every tensor in it (its layers' keys and values, a linear-attention layer's
    recurrent and convolution states, and any other tensor a few attributes deep) replaced by `fn(tensor)`; objects
    that hold no tensor are shared, `kv` is left unchanged."""
    import torch

    memo: dict[int, Any] = {}

    def walk(obj: Any, depth: int) -> Any:
        if id(obj) in memo:
            return memo[id(obj)]
        out = obj
        if isinstance(obj, torch.Tensor):
            out = fn(obj)
        elif depth > 4 or isinstance(obj, (str, bytes, type)):
            pass
        elif type(obj) in (list, tuple):
            items = [walk(item, depth + 1) for item in obj]
            if any(a is not b for a, b in zip(items, obj)):
                out = type(obj)(items)
        elif type(obj) is dict:  # e.g. a linear-attention layer's recurrent / conv states, by state index
            pairs = {k: walk(v, depth + 1) for k, v in obj.items()}
            if any(pairs[k] is not v for k, v in obj.items()):
                out = pairs
        elif hasattr(obj, "__dict__"):
            changed = {k: new for k, v in vars(obj).items() if (new := walk(v, depth + 1)) is not v}
            if changed:
                out = copy.copy(obj)
                vars(out).update(changed)
        memo[id(obj)] = out
        return out

    try:
        return walk(kv, 0)
    finally:
        # `walk` refers to itself (a reference cycle): left alone, the memo and every tensor in it would stay alive
        # until Python's cycle collector ran (a 6.9 GB video prefix held twice at the first answer's peak)
        memo.clear()


def cache_nbytes(kv: Any, as_held: bool = False) -> int:
    """Bytes of the tensors a KV cache holds; `as_held`: pinned host blocks count rounded up to a power of two,
    as PyTorch's pinned allocator takes them."""
    total = 0

    def add(t: Any) -> Any:
        nonlocal total
        n = t.numel() * t.element_size()
        total += (1 << max(0, n - 1).bit_length()) if as_held and t.device.type == "cpu" and t.is_pinned() else n
        return t

    map_cache(kv, add)
    return total


class CudaTiers:
    """Copies of KV caches between the GPU and pinned host RAM on a side stream, off the model's stream."""

    def __init__(self, device: str) -> None:
        import torch

        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)

    def to_host(self, kv: Any) -> Any:
        """Start copying `kv` to pinned RAM and return the copy; a later `to_device` on this stream waits for it."""
        import torch

        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the cache has been written

        def move(t: Any) -> Any:
            if t.device.type != "cuda":
                return t
            try:
                dst = torch.empty(t.size(), dtype=t.dtype, pin_memory=True)
            except RuntimeError:  # pinning refused (locked-memory limit): pageable, copied synchronously
                dst = torch.empty(t.size(), dtype=t.dtype)
            with torch.cuda.stream(self.stream):
                dst.copy_(t, non_blocking=True)
            t.record_stream(self.stream)  # its GPU memory is not reused before the copy has read it
            return dst

        return map_cache(kv, move)

    def to_device(self, kv: Any) -> Any:
        """A copy of `kv` on the GPU, complete when this returns; the model's stream never waits for it."""
        import torch

        self.stream.synchronize()  # earlier spills are done: their GPU memory can be reused for this copy
        pairs: list[tuple[Any, Any]] = []

        def alloc(t: Any) -> Any:
            if t.device.type != "cpu":
                return t
            dst = torch.empty_like(t, device=self.device)
            pairs.append((dst, t))
            return dst

        out = map_cache(kv, alloc)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # blocks reused above are free
        with torch.cuda.stream(self.stream):
            for dst, src in pairs:
                dst.copy_(src, non_blocking=True)
        self.stream.synchronize()
        return out


@dataclass
class TierReport:
    """One tier of kept prefixes, for the GPU page and /info."""

    tier: str
    entries: int
    bytes: int
    limit_bytes: int


@dataclass
class PrefixReport:
    """What the prefix store keeps, where, and why its tiers have their sizes."""

    tiers: list[TierReport]
    reason: str
    hits: int
    misses: int
    note: str = ""
    """Why the last prefix that could not be kept was not kept (empty when every one was)."""


@dataclass
class _Kept:
    prefix: Prefix
    on_host: bool
    held: int


class PrefixStore:
    """Kept prefix KV caches in two tiers, least recently used first out: put() lands on the device ("GPU") tier;
    over its limit the least recently used entries spill to the host tier (`to_host`), over that limit they are
    dropped; get() of a spilled entry copies it back (`to_device`). Without `to_host` there is no host tier
    (a CPU engine: the device tier is RAM). Thread-safe."""

    def __init__(self, gpu_limit_bytes: int, host_limit_bytes: int = 0, *, to_host: Callable[[Any], Any] | None = None,
                 to_device: Callable[[Any], Any] | None = None, reason: str = "", device_tier: str = "GPU",
                 host_tier: str = "host RAM (pinned)") -> None:
        self.limit_bytes = max(0, int(gpu_limit_bytes))
        """The device tier's limit."""
        self.host_limit_bytes = max(0, int(host_limit_bytes)) if to_host is not None and to_device is not None else 0
        self._to_host, self._to_device = to_host, to_device
        self.reason, self.note = reason, ""
        self._names = (device_tier, host_tier)
        self._items: OrderedDict[str, _Kept] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.disk: Any = None
        """The disk tier (`core.vlm.prefix_disk.PrefixDisk`): big prefixes are also written there, and a prefix no
        memory tier holds is read back from it (a restart, another process) onto `disk_device`."""
        self.disk_device: Any = None
        self.disk_hits = 0

    @classmethod
    def for_device(cls, device: str, plan: TierPlan) -> "PrefixStore":
        """The store of an engine on `device`, sized by `plan` (on CUDA the host tier is pinned RAM)."""
        if device.startswith("cuda"):
            tiers = CudaTiers(device)
            return cls(plan.gpu_limit, plan.host_limit, to_host=tiers.to_host, to_device=tiers.to_device,
                       reason=plan.reason)
        return cls(plan.gpu_limit, 0, reason=plan.reason, device_tier="RAM")

    def get(self, key: str) -> Prefix | None:
        with self._lock:
            kept = self._items.get(key)
            if kept is not None and kept.on_host:
                kept = self._restore(key, kept)
            if kept is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return kept.prefix
            if self.disk is None:
                self.misses += 1
                return None
        found = self.disk.load(key, self.disk_device)  # outside the lock: seconds for a long video's prefix
        with self._lock:
            if found is None:
                self.misses += 1
                return None
            self.hits += 1
            self.disk_hits += 1
        self.put(found, save=False)
        return found

    def _restore(self, key: str, kept: _Kept) -> _Kept | None:
        """A spilled entry copied back to the device (kept there unless larger than its tier); None if it fails."""
        assert self._to_device is not None
        stays = kept.prefix.nbytes <= self.limit_bytes  # else it lives on the host: a copy for this request
        if stays:
            del self._items[key]
            self._fit(kept.prefix.nbytes)  # room first, so the copy can reuse the memory of what spills
        try:
            back = _Kept(dataclasses.replace(kept.prefix, kv=self._to_device(kept.prefix.kv)), False, kept.prefix.nbytes)
        except RuntimeError as exc:  # e.g. out of GPU memory: the runner computes the prefix again
            log.warning("a kept prefix could not be copied back to the device (%s); computing it again", exc)
            self._items[key] = kept
            self._fit(0)
            return None
        if stays:
            self._items[key] = back
        return back

    def put(self, item: Prefix, save: bool = True) -> None:
        """Keep `item` (on the device tier, spilling what no longer fits); `save`: also write it to the disk tier
        (in the background) when there is one and it is big enough."""
        if save and self.disk is not None:
            self.disk.save_later(item)
        with self._lock:
            self._items.pop(item.key, None)
            if item.nbytes > self.limit_bytes and item.nbytes > self.host_limit_bytes:
                host = f" and the host tier ({_size(self.host_limit_bytes)})" if self._to_host else ""
                self.note = (f"A prefix of {_size(item.nbytes)} was not kept: it is larger than the {self._names[0]} "
                             f"tier ({_size(self.limit_bytes)}){host}. Raise prefix_gpu_gb"
                             + (" or prefix_host_gb" if host else "") + ", or ask with fewer frames or pixels.")
                log.info("%s", self.note)
                return
            big = item.nbytes > self.limit_bytes  # fits the host tier only: straight there
            self._items[item.key] = self._spilled(item) if big else _Kept(item, False, item.nbytes)
            self._fit(0)

    def _fit(self, room: int) -> None:
        """Spill least recently used device entries until `room` more bytes fit; drop host ones over its limit."""
        for key in list(self._items):
            if self._bytes(False) + room <= self.limit_bytes:
                break
            kept = self._items[key]
            if kept.on_host:
                continue
            if self._to_host is None or kept.prefix.nbytes > self.host_limit_bytes:
                del self._items[key]
                continue
            self._items[key] = self._spilled(kept.prefix)
        for key in [k for k, kept in self._items.items() if kept.on_host]:
            if self._bytes(True) <= self.host_limit_bytes:
                break
            del self._items[key]

    def _spilled(self, prefix: Prefix) -> _Kept:
        assert self._to_host is not None
        moved = dataclasses.replace(prefix, kv=self._to_host(prefix.kv))
        return _Kept(moved, True, cache_nbytes(moved.kv, as_held=True))

    def _bytes(self, on_host: bool) -> int:
        return sum(k.held for k in self._items.values() if k.on_host == on_host)

    def tier_of(self, key: str) -> str | None:
        """Where `key` is kept: "device", "host", or None."""
        with self._lock:
            kept = self._items.get(key)
            return None if kept is None else ("host" if kept.on_host else "device")

    def report(self) -> PrefixReport:
        with self._lock:
            tiers = [TierReport(self._names[0], sum(not k.on_host for k in self._items.values()), self._bytes(False),
                                self.limit_bytes)]
            if self._to_host is not None:
                tiers.append(TierReport(self._names[1], sum(k.on_host for k in self._items.values()),
                                        self._bytes(True), self.host_limit_bytes))
            if self.disk is not None:
                d = self.disk.report()
                tiers.append(TierReport("disk", d.entries, d.bytes, d.limit_bytes))
            return PrefixReport(tiers, self.reason, self.hits, self.misses, self.note)

    @property
    def nbytes(self) -> int:  # bytes of KV cache kept, all tiers together
        return sum(k.prefix.nbytes for k in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def release_device(self) -> int:
        """Spill every device entry to the host tier (dropped where none): room for a prefill; returns how many."""
        with self._lock:
            n = sum(not k.on_host for k in self._items.values())
            self._fit(self.limit_bytes + 1)
            return n

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

