"""Where visual features are kept: the result-cache key of a video's features, and `FeatureMemory`, which looks
them up, loads them, encodes a video once and stores it, and turns a request's kept video into prefix inputs
(from stored features, or from pixels encoded when the request runs). The format and the device work live in
`core.vlm.features`."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NoReturn, Protocol

from core.cache.base import CacheKey, make_key
from core.events import CancelToken, Progress
from core.vlm.base import EngineError, InvalidRequest, OutOfMemory
from core.vlm.features import (
    CHUNK_GROUPS,
    FORMAT_VERSION,
    FeatureMeta,
    FeaturePrefill,
    VisualFeatures,
    compose,
    encode,
    from_bytes,
    prefill,
    prompt_inputs,
    to_buffer,
    video_pixels,
)
from core.vlm.featureparts import Manifest, assemble, check_part, group_spans, split_parts
from core.vlm.types import VideoPart

log = logging.getLogger(__name__)

STAGE = "vlm-features"
PART_STAGE = "vlm-features-part"
READERS = max(2, min(8, os.cpu_count() or 2))
"""Threads reading a video's stored parts at once (each reads a value file and checks its checksum)."""
_OWNER = re.compile(r"^[0-9a-f]{64}$")


class StoredFeaturesUnreadable(EngineError):
    """Stored visual features could not be used (damaged, gone, or another format); they are computed again."""


class FeatureStore(Protocol):
    """Where features are kept: the result cache (`core.cache.CacheBackend`) or anything with these methods."""

    def get_bytes(self, key: CacheKey) -> bytes | None: ...

    def put_bytes(self, key: CacheKey, value: bytes) -> None: ...

    def contains(self, key: CacheKey) -> bool: ...


# -- keys -------------------------------------------------------------------------------------
def feature_material(model: str, dtype: str, quantization: str) -> dict[str, str]:
    """What else stored features depend on: model, precision, quantisation, transformers major.minor, format."""
    import transformers

    return {"model": model, "dtype": dtype, "quantization": quantization,
            "transformers": ".".join(transformers.__version__.split(".")[:2]), "format": str(FORMAT_VERSION)}


def store_key(cache_key: str, material: dict[str, str]) -> CacheKey:
    """The result-cache key of a video's features. A `cache_key` starting with the input's sha256 and ':' files
    them under that input (deleting the input's cache entries deletes them too)."""
    head = cache_key.split(":", 1)[0]
    owner = head if _OWNER.match(head) else hashlib.sha256(cache_key.encode("utf-8")).hexdigest()
    return make_key(owner, STAGE, {"video": cache_key, **material}, model=material["model"], precision=material["dtype"])


def part_key(cache_key: str, material: dict[str, str], index: int, chunk_groups: int) -> CacheKey:
    """The result-cache key of part `index` of a video's features (filed under the same input as the manifest)."""
    head = store_key(cache_key, material)
    return make_key(head.input_hash, PART_STAGE, {"video": cache_key, **material, "part": index,
                                                  "groups": chunk_groups},
                    model=material["model"], precision=material["dtype"])


# -- the store ------------------------------------------------------------------------------------
# activation memory of a one-pass prefill per prompt token, twice what the 4B measured on an H200 (about 120 KiB)
ONE_PASS_BYTES_PER_TOKEN = 256 * 1024


class FeatureMemory:
    """Visual features of videos for one loaded model, kept in a `FeatureStore`: look up, load, encode once."""

    def __init__(self, store: FeatureStore, material: dict[str, str], model: Any, processor: Any,
                 lock: threading.Lock) -> None:
        self.store, self.material, self.model, self.processor, self.lock = store, material, model, processor, lock
        cfg = model.config
        self.width = int(getattr(getattr(cfg, "text_config", cfg), "hidden_size"))
        self.layers = len(getattr(getattr(cfg, "vision_config", None), "deepstack_visual_indexes", None) or [])
        self._known: OrderedDict[str, FeatureMeta] = OrderedDict()
        self._bad: set[str] = set()
        self._guard = threading.Lock()
        self._saving: dict[str, threading.Thread] = {}
        self.hurry = threading.Event()
        """Set while someone waits for a pending save (`wait`): an ingest's writer then stops yielding to requests."""
        self._waiters = 0
        self._recent: dict[str, VisualFeatures] = {}
        self.chunk_groups = CHUNK_GROUPS
        self.last_ingest: Any = None
        """Temporal groups per stored part (and per vision-tower call of an ingest)."""
        self.chunk_tokens = 0  # the prefill's chunk (setting `prefill_chunk_tokens`; 0: the whole prefix at once)
        self.start_prefix: Any = None
        """`core.vlm.prefixstream.stream_prefix` of the runner: (messages, plan) -> a `PrefixStream` (or None), for
        an ingest given `prefix_of`."""

    def save_later(self, cache_key: str, features: VisualFeatures) -> None:
        """`save` in a background thread, off the first answer's path (reads of `cache_key` wait for it; the
        process waits for it at exit)."""
        thread = threading.Thread(target=self.save, args=(cache_key, features), name="vlscope-features-save")
        with self._guard:
            self._saving[cache_key] = thread
        thread.start()

    def track_save(self, cache_key: str, thread: threading.Thread) -> None:
        """Count `thread` (storing `cache_key`'s features) among the pending saves `wait` waits for."""
        with self._guard:
            self._saving[cache_key] = thread

    def wait(self, cache_key: str | None = None) -> None:
        """Wait until the pending saves (of `cache_key`, or all) are stored."""
        with self._guard:
            threads = [t for k, t in self._saving.items() if cache_key is None or k == cache_key]
            self._waiters += 1
            self.hurry.set()
        try:
            for thread in threads:
                thread.join()
        finally:
            with self._guard:
                self._waiters -= 1
                if not self._waiters:
                    self.hurry.clear()
        with self._guard:
            for k in [k for k, t in self._saving.items() if not t.is_alive()]:
                del self._saving[k]

    def _note(self, cache_key: str, meta: FeatureMeta | None) -> None:
        with self._guard:
            self._known.pop(cache_key, None)
            if meta is not None:
                self._known[cache_key] = meta
                self._bad.discard(cache_key)
                while len(self._known) > 512:
                    self._known.popitem(last=False)

    def forget(self, cache_key: str) -> None:
        """Drop what this process remembers of `cache_key` (the store is read again next time)."""
        self._note(cache_key, None)

    def _manifest(self, cache_key: str) -> Manifest | None:
        """The manifest stored under `cache_key` (a few hundred bytes: no part is read), or None."""
        self.wait(cache_key)
        key = store_key(cache_key, self.material)
        contains = getattr(self.store, "contains", None)
        try:
            present = contains(key) if contains is not None else None
            blob = self.store.get_bytes(key)
        except Exception as exc:  # noqa: BLE001 - a store that cannot be reached is a miss (the frames still work)
            log.warning("visual features of %s not read: %s", cache_key, exc)
            return None
        if blob is None:
            if present:  # there, but the store could not read it back (it reports and drops it)
                self._fail(cache_key, "the result cache could not read the entry back (damaged on disk)")
            return None
        try:
            manifest = Manifest.from_bytes(blob)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._fail(cache_key, str(exc))
        if manifest.width != self.width or manifest.layers != self.layers:
            self._fail(cache_key, f"{manifest.layers} DeepStack maps of width {manifest.width}, the model has "
                                  f"{self.layers} of width {self.width}")
        return manifest

    def _fail(self, cache_key: str, why: str) -> NoReturn:
        with self._guard:
            self._known.pop(cache_key, None)
            self._bad.add(cache_key)
        log.warning("stored visual features of %s unreadable: %s", cache_key, why)
        raise StoredFeaturesUnreadable(f"The stored visual features of this video could not be used ({why})",
                                       "Send the video's frames again: they are encoded and stored anew.")

    def lookup(self, cache_key: str) -> FeatureMeta | None:
        """The plan of the features stored under `cache_key`, or None; StoredFeaturesUnreadable when damaged."""
        with self._guard:
            if cache_key in self._bad:
                return None
            if cache_key in self._known:
                self._known.move_to_end(cache_key)
                return self._known[cache_key]
        manifest = self._manifest(cache_key)
        meta = manifest.meta if manifest is not None else None
        self._note(cache_key, meta)
        return meta

    def _part(self, cache_key: str, manifest: Manifest, index: int, device: Any) -> VisualFeatures:
        blob = self._read(part_key(cache_key, self.material, index, manifest.chunk_groups))
        if blob is None:
            raise ValueError(f"part {index + 1} of {manifest.parts} is missing")
        part = from_bytes(blob)
        check_part(manifest, index, part.meta)
        if device is not None and str(device) != "cpu":
            part.pooler = part.pooler.to(device, non_blocking=True)
            part.deepstack = [d.to(device, non_blocking=True) for d in part.deepstack]
        return part

    def part_key(self, cache_key: str, index: int) -> CacheKey:
        """The key of part `index` of `cache_key`'s features at this memory's `chunk_groups`."""
        return part_key(cache_key, self.material, index, self.chunk_groups)

    def _read(self, key: CacheKey) -> Any:
        """The stored bytes of `key`, as a view without a copy where the store offers one (`get_buffer`)."""
        buffer = getattr(self.store, "get_buffer", None)
        return buffer(key) if buffer is not None else self.store.get_bytes(key)

    def _stored_part(self, key: CacheKey, device: Any) -> VisualFeatures:
        blob = self._read(key)
        if blob is None:
            raise InvalidRequest("A stored part of the video's features went missing during the ingest; ingest again.")
        part = from_bytes(blob)
        if device is not None and str(device) != "cpu":
            part.pooler = part.pooler.to(device)
            part.deepstack = [d.to(device) for d in part.deepstack]
        return part

    def load(self, cache_key: str, device: Any = None) -> VisualFeatures | None:
        """The features stored under `cache_key` (on `device`; the CPU by default), or None; StoredFeaturesUnreadable
        when damaged. The parts are read by a few threads at once and copied to the device as they come."""
        with self._guard:
            recent = self._recent.pop(cache_key, None)
        if recent is not None:
            return recent
        manifest = self._manifest(cache_key)
        if manifest is None:
            self.forget(cache_key)
            return None
        try:
            with ThreadPoolExecutor(max_workers=min(READERS, manifest.parts)) as pool:
                parts = list(pool.map(lambda i: self._part(cache_key, manifest, i, device), range(manifest.parts)))
            features = assemble(manifest, parts, device)
        except Exception as exc:  # noqa: BLE001 - any failure to read stored bytes is a reported miss
            if type(exc).__name__ == "OutOfMemoryError":
                raise OutOfMemory("loading the stored visual features of a video") from exc
            self._fail(cache_key, f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc))
        self._note(cache_key, features.meta)
        return features

    def keep_recent(self, cache_key: str, features: VisualFeatures) -> None:
        """Hold `features` for the next `load` of `cache_key` (once): a question right after an ingest skips the
        store. One video at a time."""
        with self._guard:
            self._recent.clear()
            self._recent[cache_key] = features

    def save(self, cache_key: str, features: VisualFeatures) -> None:
        """Keep `features` under `cache_key` (its parts, then the manifest); a store that refuses is logged (the
        answer goes on)."""
        try:
            for index, part in enumerate(split_parts(features, self.chunk_groups)):
                self.store.put_bytes(part_key(cache_key, self.material, index, self.chunk_groups), to_buffer(part))
            self._put_manifest(cache_key, features.meta, len(group_spans(features.meta.grid[0], self.chunk_groups)))
        except Exception as exc:  # noqa: BLE001 - the features are a saving, not the answer
            log.warning("visual features of %s not stored: %s", cache_key, exc)
            return
        self._note(cache_key, features.meta)

    def _put_manifest(self, cache_key: str, meta: FeatureMeta, parts: int) -> None:
        manifest = Manifest(meta, self.chunk_groups, parts, self.width, self.layers)
        self.store.put_bytes(store_key(cache_key, self.material), manifest.to_bytes())

    def ingest(self, cache_key: str, video: Any, progress: Progress | None = None,
               cancel: CancelToken | None = None, *, reuse: bool = True, keep: bool = True,
               prefix_of: Callable[[FeatureMeta], list[Any]] | None = None) -> Any:
        """Decode, preprocess and encode a video part by part, pipelined, each part stored as it is done (see
        `core.vlm.ingest.ingest`); resumes at the last stored part. `prefix_of(plan)`: the messages the video goes
        into (the question's text aside); their kept prefix is then prefilled part by part meanwhile."""
        from core.vlm.ingest import ingest

        self.last_ingest = ingest(self, cache_key, video, progress, cancel, reuse=reuse, keep=keep,
                                  prefix_of=prefix_of)
        return self.last_ingest

    def encode(self, part: VideoPart, frame_size: tuple[int, int] | None = None) -> FeatureMeta:
        """Encode a part's frames once (holding the model) and keep them under its `cache_key`; returns the plan."""
        if not part.cache_key or not part.frames:
            raise InvalidRequest("Encoding a video to keep needs its frames and a cache_key naming them.")
        pixels, meta = video_pixels(self.processor, part, frame_size)
        with self.lock:
            features = encode(self.model, pixels, meta)
        self.save(part.cache_key, features)
        return features.meta

    def prefix_inputs(self, prefix_text: str, part: VideoPart, device: Any) -> FeaturePrefill:
        """The prefix inputs of a kept video: from stored features (feature-backed part, or frames already
        encoded under its cache_key), else the pixels to encode (and store) when the request runs."""
        if part.features_from:
            sources = []
            for key in part.features_from:
                got = self.load(key, device)
                if got is None:
                    self._fail(key, "it is no longer in the result cache")
                sources.append(got)
            features = compose(sources, part)
            return FeaturePrefill(prompt_inputs(self.processor, prefix_text, features.meta, device), features.meta,
                                  features)
        assert part.cache_key
        try:
            stored = self.load(part.cache_key, device)
        except StoredFeaturesUnreadable:
            stored = None  # logged; encoded again from the frames below
        if stored is not None and stored.meta.frame_indices == list(part.frame_indices):
            return FeaturePrefill(prompt_inputs(self.processor, prefix_text, stored.meta, device), stored.meta, stored)
        pixels, meta = video_pixels(self.processor, part)
        return FeaturePrefill(prompt_inputs(self.processor, prefix_text, meta, device), meta, None, pixels,
                              part.cache_key)

    def prefill(self, inputs: FeaturePrefill) -> tuple[Any, Any]:
        """(KV cache, rope deltas) of a prefix, encoding (and storing) its features first when it has none."""
        if inputs.features is None:
            inputs.features = encode(self.model, inputs.pixels, inputs.meta)
            inputs.pixels = None
            if inputs.store_as:
                self.save_later(inputs.store_as, inputs.features)
        return prefill(self.model, inputs, inputs.features, self.chunk_for(int(inputs["input_ids"].shape[1])))

    def chunk_for(self, n_tokens: int) -> int:
        """The prefill's chunk for a prefix of `n_tokens`: one pass (0) when it is short or the GPU has room for its
        activations twice over (chunks cost time: the attention then needs a mask), else `chunk_tokens`."""
        if self.chunk_tokens <= 0 or n_tokens <= self.chunk_tokens:
            return 0
        device = getattr(self.model, "device", None)
        if getattr(device, "type", "cpu") == "cuda":
            from core.vlm.loading import cuda_memory

            free, _ = cuda_memory(device.index or 0)
            if free > n_tokens * ONE_PASS_BYTES_PER_TOKEN:
                return 0
        return self.chunk_tokens


def uses_features(parts: list[Any], memory: FeatureMemory | None) -> bool:
    """Whether a request's visual input goes through the visual memory: its one video has a cache_key (or is
    feature-backed) and the engine has a feature store. A feature-backed video elsewhere is an InvalidRequest."""
    backed = any(isinstance(p, VideoPart) and p.features_from for p in parts)
    if backed and (memory is None or len(parts) != 1):
        raise InvalidRequest("A video made of stored visual features must be the request's only visual input, on "
                             "a local engine with a feature store (LocalEngine.set_feature_store); send its frames.")
    return memory is not None and len(parts) == 1 and isinstance(parts[0], VideoPart) and bool(parts[0].cache_key)
