"""The pipelined ingest of a video into the visual memory: decode, preprocess and encode part by part.

While the vision tower encodes one part (`FeatureMemory.chunk_groups` temporal groups), the next is preprocessed and
the one after decoded (the reader's own thread); no whole-video frame list is held. Each part is stored as soon as
it is encoded (a writer thread; while a question's prefix is prefilled, after it: `STORE_HOLD_S`; once the ingest
is over, not while the model serves a request: `STORE_YIELD_S`), the manifest last, so an ingest that is killed or
cancelled resumes at its last stored part. `FeatureMemory.ingest` calls `ingest` here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from core.events import CancelToken, Progress, raise_if_cancelled, report
from core.vlm.base import InvalidRequest
from core.vlm.featureparts import Manifest, assemble, check_part, group_spans, part_meta
from core.vlm.features import FeatureMeta, VisualFeatures, encode, to_buffer, video_pixels
from core.vlm.types import VideoPart

log = logging.getLogger(__name__)

STORE_HOLD_S = 15.0
"""While a prefix is prefilled during the ingest (a question waits), encoded parts are stored after it, or once the
ingest has run this long: serialising and writing ~1 GB beside the prefill slowed a 10-minute video's ingest by 1-2 s
(benchmarks/ingest_contention.py); a long ingest still stores as it goes, so a killed one resumes."""

STORE_YIELD_S = 10.0
"""After the ingest, a part waits while the model runs a request (the first answer, a follow-up), at most this long
each, unless someone waits for the store (`FeatureMemory.wait`, a process closing). On the H200 a follow-up with the
parts being written beside it took 0.38 s to its first token, 0.20 s with the writer yielding (benchmarks/e2e.py
runs 13 and 14)."""


@dataclass
class IngestInput:
    """A video to ingest: the frame numbers of its plan (with what the prompt's timestamps need), the frames' size,
    and `read(frame_numbers, cancel)`, which decodes those frames in order: (frame number, RGB array of `frame_hw`)
    each, the number of the frame decoded (a key frame near the one asked for, when the plan takes key frames)."""

    frame_indices: list[int]
    source_fps: float
    total_frames: int
    frame_hw: tuple[int, int]
    read: Callable[[list[int], CancelToken | None], Iterator[tuple[int, Any]]]
    max_pixels_total: int | None = None
    min_pixels_total: int | None = None
    read_apart: bool = False
    """`read` decodes in other processes (`core.media.decodeproc`): the prefix may be prefilled beside it."""


@dataclass
class IngestReport:
    """What one ingest did: parts in all, found stored (an earlier, maybe killed, ingest), encoded now; seconds."""

    meta: FeatureMeta
    parts: int
    reused: int
    encoded: int
    seconds: float
    phases_s: dict[str, float] = field(default_factory=dict)
    """Seconds spent waiting for frames (decode), preprocessing, in the vision tower, storing; with a prefix prefilled
    during the ingest, in the language model (prefill)."""



def ingest(memory: Any, cache_key: str, video: IngestInput, progress: Progress | None = None,
           cancel: CancelToken | None = None, *, reuse: bool = True, keep: bool = True,
           prefix_of: Callable[[FeatureMeta], list[Any]] | None = None) -> IngestReport:
    """Decode, preprocess and encode a video part by part (`chunk_groups` temporal groups each), pipelined: while
    the vision tower encodes one part, the next is preprocessed and the one after decoded; no whole-video frame
    list is held. Each part is stored as soon as it is encoded, and the manifest last, so an ingest that is
    killed or cancelled resumes at its last stored part (`reuse=False` encodes every part again). With `keep`,
    the video's features stay held for the next `load` (the question that asked for the ingest). With `prefix_of`
    (the plan -> the messages the video goes into), the language model prefills their kept prefix in order, as the
    parts come when `video.read_apart` (else once the frames are decoded; `core.vlm.prefixstream`), so the question
    after the ingest prefills its own words only; the parts are then stored after it (at most `STORE_HOLD_S`)."""
    started = time.perf_counter()
    vp = memory.processor.video_processor
    t, patch, merge = int(vp.temporal_patch_size), int(vp.patch_size), int(vp.merge_size)
    indices = [int(i) for i in video.frame_indices]
    h, w = (int(x) for x in video.frame_hw)
    if not indices or h % (patch * merge) or w % (patch * merge):
        raise InvalidRequest(f"An ingest needs frames planned for the model (a multiple of {patch * merge} pixels "
                             f"a side), not {w}x{h}.")
    dtype = str(next(memory.model.model.visual.parameters()).dtype).removeprefix("torch.")
    groups = -(-len(indices) // t)
    meta = FeatureMeta(grid=[groups, h // patch, w // patch], frame_indices=indices,
                       source_fps=float(video.source_fps), total_frames=int(video.total_frames), resized=[h, w],
                       frame_hw=[h, w], patch=patch, merge=merge, temporal_patch=t, dtype=dtype,
                       max_pixels_total=video.max_pixels_total, min_pixels_total=video.min_pixels_total)
    meta.check()
    spans = group_spans(groups, memory.chunk_groups)
    keys = [memory.part_key(cache_key, i) for i in range(len(spans))]
    device = getattr(memory.model, "device", None)
    stream = _start_stream(memory, prefix_of, meta)
    held: dict[int, VisualFeatures] = {}
    for i, key in enumerate(keys):  # parts an earlier ingest stored (it may have been killed): read, checked
        if reuse and memory.store.contains(key):
            try:
                part = memory._stored_part(key, device if keep or stream is not None else None)
                if part.meta.grid[1:] == meta.grid[1:] and part.meta.grid[0] == spans[i][1] - spans[i][0]:
                    held[i] = part
            except Exception as exc:  # noqa: BLE001 - an unreadable part is encoded again
                log.warning("stored part %d of %s unreadable (%s); encoding it again", i + 1, cache_key, exc)
    todo = [i for i in range(len(spans)) if i not in held]
    phases = {"decode": 0.0, "preprocess": 0.0, "encode": 0.0, "store": 0.0}
    prep_device = device if getattr(device, "type", "cpu") == "cuda" else None
    stop = threading.Event()
    ready: queue.Queue[Any] = queue.Queue(maxsize=2)

    def hand(item: Any) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def prepare() -> None:  # decode (the reader's own thread) and preprocess, a part ahead of the vision tower
        try:
            wanted = [n for i in todo for n in part_meta(meta, *spans[i]).frame_indices]
            frames = iter(video.read(wanted, stop))
            for i in todo:
                pm = part_meta(meta, *spans[i])
                mark = time.perf_counter()
                got = [f for _, f in zip(pm.frame_indices, frames)]
                phases["decode"] += time.perf_counter() - mark
                if len(got) < len(pm.frame_indices):
                    raise InvalidRequest(f"The video gave {len(got)} of the {len(pm.frame_indices)} frames of "
                                         f"part {i + 1}; it may be damaged.")
                mark = time.perf_counter()
                part = VideoPart([f for _, f in got], [n for n, _ in got], meta.source_fps, meta.total_frames,
                                 max_pixels_total=meta.max_pixels_total, min_pixels_total=meta.min_pixels_total)
                pixels, made = video_pixels(memory.processor, part, as_given=True, device=prep_device)
                phases["preprocess"] += time.perf_counter() - mark
                hand((i, pixels, made))
            decoded.set()
            hand(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the ingest's thread
            decoded.set()
            hand(exc)

    saved: queue.Queue[Any] = queue.Queue()
    failures: list[str] = []

    complete: list[FeatureMeta] = []  # the whole plan, once every part is encoded: the manifest is written last

    def store() -> None:
        while (item := saved.get()) is not None:
            i, f = item
            while streaming.is_set() and time.perf_counter() < started + STORE_HOLD_S:
                time.sleep(0.01)
            if over.is_set():  # during the ingest its own encodes and prefill hold the model: parts go as they come
                _yield_to_requests(memory)
            mark = time.perf_counter()
            try:
                memory.store.put_bytes(keys[i], to_buffer(f))
            except Exception as exc:  # noqa: BLE001 - no manifest then: the next ingest redoes the part
                failures.append(f"part {i + 1}: {exc}")
            phases["store"] += time.perf_counter() - mark
        if failures:
            log.warning("visual features of %s not all stored: %s", cache_key, "; ".join(failures))
            memory.forget(cache_key)
        elif complete:
            try:
                memory._put_manifest(cache_key, complete[0], len(spans))
                memory._note(cache_key, complete[0])
            except Exception as exc:  # noqa: BLE001 - the features are a saving, not the answer
                log.warning("visual features of %s not stored: %s", cache_key, exc)

    over = threading.Event()  # the ingest's own work is done: the model's lock is then held by requests
    fed = [0]  # parts handed to the prefix stream, in order
    decoded = threading.Event()  # the reader is done: no decoding beside the model's thread any more
    streaming = threading.Event()  # a prefix is prefilled during this ingest: the parts are stored after it
    if stream is not None:
        streaming.set()

    def pump(force: bool = False) -> None:
        """Hand the prefix stream the parts there, in order, each on its own (the same chunks whatever the timing,
        so the same numbers). Not while frames are still decoded in this process (unless `force`): beside the
        decoding threads the prefill ran at half speed (GIL), and the GPU has the time once the decoding is done
        (benchmarks/ingest_contention.py). Decoded in worker processes (`read_apart`), a part goes as it comes."""
        nonlocal stream
        if stream is None or not (force or video.read_apart or decoded.is_set()):
            return
        while stream is not None and fed[0] < len(spans) and (fed[0] in held or fed[0] in encoded):
            i = fed[0]
            part = held[i] if i in held else encoded[i]
            frames = [n for j in range(i + 1) for n in (held[j] if j in held else encoded[j]).meta.frame_indices]
            try:
                stream.feed(frames, spans[i][1], part.pooler, part.deepstack)
            except Exception as exc:  # noqa: BLE001 - the prefix is a saving: the question prefills it then
                log.warning("the prefix of %s is not prefilled during the ingest: %s", cache_key, exc)
                stream.drop()
                stream = None
                streaming.clear()
            fed[0] += 1

    reader = threading.Thread(target=prepare, name="vlscope-ingest-read", daemon=True)
    # not a daemon: a process that ends after an ingest waits for its parts and manifest to be stored
    writer = threading.Thread(target=store, name="vlscope-ingest-store")
    encoded: dict[int, VisualFeatures] = {}
    reader.start()
    writer.start()
    try:
        report(progress, 0.0, f"{len(held)} of {len(spans)} parts already stored", "ingest")
        if stream is not None and not held:  # while the first frames are decoded (a resumed ingest has parts now)
            try:
                stream.warm()
            except Exception as exc:  # noqa: BLE001 - a saving: the chunks then build their plans as they come
                log.warning("the prefix's attention plans not built ahead: %s", exc)
        pump()
        while todo:
            raise_if_cancelled(cancel)
            try:
                item = ready.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            i, pixels, made = item
            if made.grid[1:] != meta.grid[1:]:
                raise InvalidRequest(f"part {i + 1} came out at grid {made.grid}, the plan is {meta.grid}")
            mark = time.perf_counter()
            with memory.lock:
                f = encode(memory.model, pixels, made)
            phases["encode"] += time.perf_counter() - mark
            del pixels
            # the writer gets CPU copies (a few ms a part here): its serialising then never touches the GPU stream
            # the prefill that follows runs on
            saved.put((i, VisualFeatures(f.meta, f.pooler.to("cpu"), [d.to("cpu") for d in f.deepstack])))
            encoded[i] = f
            pump()
            report(progress, len(encoded) / len(todo), f"part {len(encoded)} of {len(todo)} encoded "
                   f"({len(spans)} in all)", "ingest")
        metas = {**{i: f.meta for i, f in held.items()}, **{i: f.meta for i, f in encoded.items()}}
        meta = replace(meta, frame_indices=[n for i in range(len(spans)) for n in metas[i].frame_indices])
        meta.check()
        complete.append(meta)
        memory._note(cache_key, meta)  # known now: a follow-up's lookup does not wait for the parts to be written
        pump(force=True)
        if stream is not None:
            try:
                stream.finish(meta)
                phases["prefill"] = stream.seconds
            except Exception as exc:  # noqa: BLE001 - as in pump
                log.warning("the prefix of %s is not prefilled during the ingest: %s", cache_key, exc)
            stream = None
    finally:
        over.set()
        streaming.clear()
        if stream is not None:  # cancelled, or the ingest failed: no partial prefix is kept
            stream.drop()
        stop.set()
        saved.put(None)
        memory.track_save(cache_key, writer)  # lookups of the video wait for it; the answer does not
        if not keep:
            writer.join()
        reader.join(timeout=10)
    manifest = Manifest(meta, memory.chunk_groups, len(spans), memory.width, memory.layers)
    if keep:
        parts = [encoded[i] if i in encoded else held[i] for i in range(len(spans))]
        for i, part in enumerate(parts):
            check_part(manifest, i, part.meta)
        memory.keep_recent(cache_key, assemble(manifest, parts, device))
    return IngestReport(meta, len(spans), len(spans) - len(encoded), len(encoded), time.perf_counter() - started,
                        phases)


def _start_stream(memory: Any, prefix_of: Callable[[FeatureMeta], list[Any]] | None, meta: FeatureMeta) -> Any:
    """The `PrefixStream` of the messages `prefix_of` gives for the plan, or None (none asked, or none to build)."""
    start = getattr(memory, "start_prefix", None)
    if prefix_of is None or start is None:
        return None
    try:
        return start(prefix_of(meta), meta)
    except Exception as exc:  # noqa: BLE001 - the prefix is a saving, the ingest goes on
        log.warning("the prefix is not prefilled during the ingest: %s", exc)
        return None


def _yield_to_requests(memory: Any) -> float:
    """Wait while the model is busy (its lock held) and nobody waits for the store, at most `STORE_YIELD_S`; the
    seconds waited."""
    lock, hurry = memory.lock, memory.hurry
    t0 = time.perf_counter()
    while lock.locked() and not hurry.is_set() and time.perf_counter() < t0 + STORE_YIELD_S:
        time.sleep(0.005)
    return time.perf_counter() - t0
