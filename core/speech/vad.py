"""Finding speech: an energy-based voice-activity detector, so stretches of silence are never sent to a speech
engine. Frames of 30 ms louder than a threshold set from the file's own quiet and loud levels are speech; short
gaps are bridged, short blips dropped, and each stretch padded a little so no word is clipped.

It tells sound from silence, not speech from music: a file with music throughout is all "speech" (nothing is
skipped, nothing is lost).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class VadOptions:
    """How speech is told from silence.

    frame_s: analysis frame; floor_db: quietest level ever counted as speech (dBFS); above_floor_db: how far
    above the file's quiet level (its 10th percentile) speech must be; below_peak_db: speech within this many dB
    of the file's loud level (99th percentile) always counts; min_speech_s: shorter blips are dropped;
    min_silence_s: shorter gaps are bridged; pad_s: added either side of each stretch.
    """

    frame_s: float = 0.03
    floor_db: float = -50.0
    above_floor_db: float = 12.0
    below_peak_db: float = 30.0
    min_speech_s: float = 0.15
    min_silence_s: float = 0.3
    pad_s: float = 0.2

    def to_dict(self) -> dict[str, float]:
        """A JSON-able dict (part of cache keys)."""
        return asdict(self)


def frame_levels(samples: np.ndarray, sample_rate: int, frame_s: float = 0.03) -> np.ndarray:
    """The level of each `frame_s` frame in dBFS (RMS; -120 for digital silence)."""
    hop = max(1, int(round(frame_s * sample_rate)))
    n = len(samples) // hop
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    frames = samples[: n * hop].reshape(n, hop).astype(np.float32, copy=False)
    rms = np.sqrt(np.mean(np.square(frames), axis=1, dtype=np.float64))
    tail = samples[n * hop:]
    levels = 20.0 * np.log10(np.maximum(rms, 1e-6))
    if tail.size:
        levels = np.append(levels, 20.0 * np.log10(max(float(np.sqrt(np.mean(np.square(tail)))), 1e-6)))
    return levels.astype(np.float32)


def speech_threshold(levels: np.ndarray, options: VadOptions = VadOptions()) -> float:
    """The level (dBFS) above which a frame counts as speech for this file."""
    if levels.size == 0:
        return options.floor_db
    quiet = float(np.percentile(levels, 10))
    loud = float(np.percentile(levels, 99))
    return max(options.floor_db, min(quiet + options.above_floor_db, loud - options.below_peak_db))


def speech_regions(samples: np.ndarray, sample_rate: int,
                   options: VadOptions = VadOptions()) -> list[tuple[float, float]]:
    """The stretches of the sound that hold speech, as (start, end) seconds in time order, not overlapping."""
    levels = frame_levels(samples, sample_rate, options.frame_s)
    if levels.size == 0:
        return []
    duration = len(samples) / float(sample_rate)
    loud = levels > speech_threshold(levels, options)
    regions: list[list[float]] = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(np.int8), [0]])))
    for start_i, end_i in zip(edges[0::2], edges[1::2]):
        start, end = start_i * options.frame_s, min(duration, end_i * options.frame_s)
        if regions and start - regions[-1][1] < options.min_silence_s:
            regions[-1][1] = end  # a short gap: the same stretch of speech
        else:
            regions.append([start, end])
    out: list[tuple[float, float]] = []
    for start, end in regions:
        if end - start < options.min_speech_s:
            continue  # a click or a breath
        start, end = max(0.0, start - options.pad_s), min(duration, end + options.pad_s)
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out
