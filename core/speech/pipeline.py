"""A transcript of a file, resumable: decode the sound, find the speech (silence is skipped), cut it into chunks,
hear each chunk with a speech engine and keep it in the result cache as soon as it is heard, then merge.

    transcript = transcribe_file("talk.mp4", engine, cache, progress=report, cancel=token)

Cache entries, all filed under the file's content hash (so `vlscope cache delete --input HASH` removes them):
`speech.plan` (where the speech is and the chunks, per voice-detector and chunk options), `speech.chunk` (one per
chunk: its bounds, the engine, its model and weights, the language asked for), `speech.transcript` (the merged
transcript) and `speech.latest` (which transcript of the file was made last). An interrupted run (cancelled,
killed, out of memory) resumes at the first chunk not yet stored; a finished one is read back at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator

from core.cache import CacheBackend, CacheKey, hash_file, make_key
from core.events import CancelToken, Progress, raise_if_cancelled, report
from core.speech.audio import AudioTrack, clock, decode_audio
from core.speech.chunks import Chunk, ChunkOptions, merge_chunks, plan_chunks
from core.speech.engine import ChunkAudio, ChunkResult, SpeechEngine
from core.speech.types import Transcript
from core.speech.vad import VadOptions, speech_regions

log = logging.getLogger(__name__)

PLAN_STAGE = "speech.plan"
CHUNK_STAGE = "speech.chunk"
TRANSCRIPT_STAGE = "speech.transcript"
LATEST_STAGE = "speech.latest"
LOCK_STAGE = "speech"
PIPELINE_VERSION = 1
AUDIO_SHARE = 0.1  # of a run's progress: decoding the sound (the rest: hearing the chunks)


@dataclass(frozen=True)
class SpeechOptions:
    """How a transcript is made: the voice detector, the chunks, the language (an ISO code such as "en" to skip
    detection; None: the engine detects it) and whether words get their own times."""

    vad: VadOptions = field(default_factory=VadOptions)
    chunks: ChunkOptions = field(default_factory=ChunkOptions)
    language: str | None = None
    word_times: bool = True

    def plan_params(self) -> dict[str, Any]:
        """What the chunk plan depends on."""
        return {"vad": self.vad.to_dict(), "chunks": self.chunks.to_dict(), "pipeline": PIPELINE_VERSION}


# ------------------------------------------------------------------------------------------ keys
def plan_key(input_hash: str, options: SpeechOptions) -> CacheKey:
    """Where the speech is and the chunks of a file, for these options."""
    return make_key(input_hash, PLAN_STAGE, options.plan_params())


def chunk_key(input_hash: str, chunk: Chunk, material: dict[str, Any], options: SpeechOptions) -> CacheKey:
    """One heard chunk: its bounds and speech stretches (ms), the engine's material, the language asked for."""
    params = {"start_ms": int(round(chunk.start * 1000)), "end_ms": int(round(chunk.end * 1000)),
              "regions": [[int(round(a * 1000)), int(round(b * 1000))] for a, b in chunk.regions],
              "engine": material, "language": options.language, "word_times": options.word_times,
              "pipeline": PIPELINE_VERSION}
    return make_key(input_hash, CHUNK_STAGE, params, model=str(material.get("model")))


def transcript_key(input_hash: str, material: dict[str, Any], options: SpeechOptions) -> CacheKey:
    """The merged transcript of a file by one engine and model, for these options."""
    params = {"plan": options.plan_params(), "engine": material, "language": options.language,
              "word_times": options.word_times}
    return make_key(input_hash, TRANSCRIPT_STAGE, params, model=str(material.get("model")))


def latest_key(input_hash: str) -> CacheKey:
    """Which transcript of the file was made last (any engine): {"key": ..., "engine": ..., "model": ...}."""
    return make_key(input_hash, LATEST_STAGE, {})


# ------------------------------------------------------------------------------------------ reading back
def _read(cache: CacheBackend | None, key: CacheKey) -> Any:
    if cache is None:
        return None
    try:
        return cache.get_json(key)
    except (ValueError, UnicodeDecodeError):  # an unreadable entry is a miss
        return None


def stored_transcript(cache: CacheBackend, input_hash: str, material: dict[str, Any],
                      options: SpeechOptions = SpeechOptions()) -> Transcript | None:
    """The finished transcript of this engine and options, or None (nothing is computed)."""
    data = _read(cache, transcript_key(input_hash, material, options))
    try:
        return Transcript.from_dict(data) if data is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def latest_transcript(cache: CacheBackend, input_hash: str) -> Transcript | None:
    """The transcript of the file made last, by whichever engine, or None."""
    pointer = _read(cache, latest_key(input_hash))
    key = CacheKey.parse(str(pointer.get("key", ""))) if isinstance(pointer, dict) else None
    if key is None:
        return None
    data = _read(cache, key)
    try:
        return Transcript.from_dict(data) if data is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def partial_transcript(cache: CacheBackend, input_hash: str, engine_name: str, material: dict[str, Any],
                       options: SpeechOptions = SpeechOptions()) -> Transcript | None:
    """What is transcribed so far (complete=False while chunks are missing), from the stored plan and chunks; None
    when no plan is stored yet. Nothing is decoded or heard."""
    done = stored_transcript(cache, input_hash, material, options)
    if done is not None:
        return done
    plan = _read(cache, plan_key(input_hash, options))
    if not isinstance(plan, dict):
        return None
    chunks = [Chunk.from_dict(c) for c in plan.get("chunks", [])]
    results: list[ChunkResult | None] = []
    for chunk in chunks:
        data = _read(cache, chunk_key(input_hash, chunk, material, options))
        results.append(ChunkResult.from_dict(data) if isinstance(data, dict) else None)
    return assemble(chunks, results, engine_name, material, float(plan.get("duration_s", 0.0)),
                    float(plan.get("speech_s", 0.0)), input_hash, list(plan.get("warnings", [])))


# ------------------------------------------------------------------------------------------ merging
def assemble(chunks: list[Chunk], results: list[ChunkResult | None], engine_name: str, material: dict[str, Any],
             duration_s: float, speech_s: float, input_hash: str | None, warnings: list[str]) -> Transcript:
    """The Transcript of the chunks heard so far (complete when every chunk is): the language is the one heard
    longest."""
    heard = [(c, r) for c, r in zip(chunks, results) if r is not None]
    segments = merge_chunks([c for c, _ in heard], [r.segments for _, r in heard])
    by_language: dict[str, float] = defaultdict(float)
    probability: dict[str, list[float]] = defaultdict(list)
    for c, r in heard:
        if r.language:
            by_language[r.language] += c.duration
            if r.language_probability is not None:
                probability[r.language].append(r.language_probability)
    language = max(by_language, key=lambda k: by_language[k]) if by_language else None
    probs = probability.get(language or "", [])
    notes = list(warnings)
    if not chunks:
        notes.append("No speech was found in the sound (it is silent, or too quiet to tell from silence).")
    elif heard and not segments:
        notes.append("The speech engine heard no words in the stretches of speech found.")
    if len(by_language) > 1:
        shares = ", ".join(f"{k} {v:.0f} s" for k, v in sorted(by_language.items(), key=lambda kv: -kv[1]))
        notes.append(f"More than one language was heard ({shares}).")
    return Transcript(segments=tuple(segments), language=language, engine=engine_name,
                      model=None if material.get("model") is None else str(material["model"]),
                      duration_s=duration_s, complete=len(heard) == len(chunks), input_hash=input_hash,
                      speech_s=speech_s, language_probability=sum(probs) / len(probs) if probs else None,
                      chunks=len(chunks), chunks_done=len(heard), warnings=tuple(notes))


# ------------------------------------------------------------------------------------------ the run
def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def transcribe_file(path: str | os.PathLike[str], engine: SpeechEngine, cache: CacheBackend | None = None, *,
                    input_hash: str | None = None, options: SpeechOptions = SpeechOptions(),
                    progress: Progress | None = None, cancel: CancelToken | None = None, refresh: bool = False,
                    audio: AudioTrack | None = None) -> Transcript:
    """The transcript of the file at `path` (a video with sound or an audio file), chunk by chunk through `cache`.

    Raises NoAudioTrack / AudioUnreadable (cause + fix) for files without usable sound, the engine's
    SpeechEngineUnavailable / SpeechModelUnavailable, and Cancelled when `cancel` is set (chunks heard so far stay
    in the cache: the next run resumes). `refresh`: hear every chunk again. `audio`: the file's sound already
    decoded (skips decoding).
    """
    input_hash = input_hash or hash_file(path)
    material = engine.material()
    tkey = transcript_key(input_hash, material, options)
    if not refresh and cache is not None:
        done = stored_transcript(cache, input_hash, material, options)
        if done is not None:
            report(progress, 1.0, "transcript read from the cache", "speech")
            return done

    def waiting() -> None:
        report(progress, 0.0, "another run is transcribing this file; waiting for it", "speech")

    lock = cache.lock(input_hash, LOCK_STAGE, on_wait=waiting) if cache is not None else contextlib.nullcontext()
    with lock:
        if not refresh and cache is not None:  # the run we waited for may have finished it
            done = stored_transcript(cache, input_hash, material, options)
            if done is not None:
                report(progress, 1.0, "transcript read from the cache", "speech")
                return done
        return _run(path, engine, cache, input_hash, material, options, progress, cancel, refresh, audio, tkey)


def _run(path: Any, engine: SpeechEngine, cache: CacheBackend | None, input_hash: str, material: dict[str, Any],
         options: SpeechOptions, progress: Progress | None, cancel: CancelToken | None, refresh: bool,
         audio: AudioTrack | None, tkey: CacheKey) -> Transcript:
    def audio_progress(fraction: float, message: str = "", _stage: str = "") -> None:
        report(progress, AUDIO_SHARE * fraction, message, "audio")

    if audio is None:
        audio = decode_audio(path, progress=audio_progress, cancel=cancel)
    raise_if_cancelled(cancel)
    pkey = plan_key(input_hash, options)
    plan = None if refresh else _read(cache, pkey)
    if isinstance(plan, dict) and abs(float(plan.get("duration_s", -1)) - audio.duration_s) < 0.05:
        chunks = [Chunk.from_dict(c) for c in plan["chunks"]]
        speech_s = float(plan.get("speech_s", 0.0))
    else:
        regions = speech_regions(audio.samples, audio.sample_rate, options.vad)
        chunks = plan_chunks(regions, options.chunks)
        speech_s = sum(b - a for a, b in regions)
        if cache is not None:
            cache.put_json(pkey, {"duration_s": round(audio.duration_s, 3), "speech_s": round(speech_s, 3),
                                  "regions": [[round(a, 3), round(b, 3)] for a, b in regions],
                                  "chunks": [c.to_dict() for c in chunks], "warnings": audio.warnings,
                                  "source": audio.source})
    total_s = sum(c.duration for c in chunks) or 1.0
    results: list[ChunkResult | None] = [None] * len(chunks)
    keys = [chunk_key(input_hash, c, material, options) for c in chunks]
    for i, key in enumerate(keys):
        data = None if refresh else _read(cache, key)
        if isinstance(data, dict):
            try:
                results[i] = ChunkResult.from_dict(data)
            except (KeyError, TypeError, ValueError):
                results[i] = None
    done_s = sum(c.duration for c, r in zip(chunks, results) if r is not None)
    pending = [i for i, r in enumerate(results) if r is None]
    found = (f"{clock(speech_s)} of speech in {clock(audio.duration_s)}, {len(chunks)} chunk"
             f"{'s' if len(chunks) != 1 else ''}")
    if len(pending) < len(chunks):
        found += f", {len(chunks) - len(pending)} already transcribed"
    report(progress, AUDIO_SHARE + (1 - AUDIO_SHARE) * done_s / total_s, found, "speech")
    for batch in _batches(pending, engine.batch_size):
        raise_if_cancelled(cancel)
        first, last = chunks[batch[0]], chunks[batch[-1]]
        what = (f"chunk {batch[0] + 1}" if len(batch) == 1 else f"chunks {batch[0] + 1}-{batch[-1] + 1}")
        report(progress, AUDIO_SHARE + (1 - AUDIO_SHARE) * done_s / total_s,
               f"transcribing {clock(first.start)}–{clock(last.end)} ({what} of {len(chunks)})", "speech")
        pieces = [ChunkAudio(chunks[i].start, audio.stretch(chunks[i].start, chunks[i].end), chunks[i].regions,
                             audio.sample_rate) for i in batch]
        heard = engine.transcribe(pieces, language=options.language, word_times=options.word_times)
        for i, result in zip(batch, heard):
            result = ChunkResult.from_dict(result.to_dict())  # as it is stored: a rerun gives the same transcript
            results[i] = result
            done_s += chunks[i].duration
            if cache is not None:
                cache.put_json(keys[i], result.to_dict())  # kept at once: a run stopped later resumes after it
    transcript = assemble(chunks, results, engine.name, material, audio.duration_s, speech_s, input_hash,
                          list(audio.warnings))
    transcript = Transcript.from_dict(transcript.to_dict())  # as it is stored (times in milliseconds)
    if cache is not None and transcript.complete:
        cache.put_json(tkey, transcript.to_dict())
        cache.put_json(latest_key(input_hash), {"key": str(tkey), "engine": engine.name,
                                                "model": transcript.model})
    report(progress, 1.0, f"{len(transcript.segments)} segments, {len(transcript.words)} words", "speech")
    return transcript
