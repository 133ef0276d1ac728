"""Silence skipped and long speech chunked: the voice detector on real espeak-ng speech, chunk plans, and the merge
of overlapping windows without a word heard twice."""

from __future__ import annotations

import numpy as np
import pytest

from core.speech.audio import decode_audio
from core.speech.chunks import Chunk, ChunkOptions, merge_chunks, plan_chunks
from core.speech.types import Segment, Word
from core.speech.vad import VadOptions, speech_regions


def test_speech_regions_match_the_sentences_said(speech_wav) -> None:
    path, said = speech_wav
    audio = decode_audio(path)
    regions = speech_regions(audio.samples, audio.sample_rate)
    # sentences 1 and 2 are 1.2 s apart (two stretches), all five found, nothing in the 12 s of silence
    assert len(regions) == len(said)
    pad = VadOptions().pad_s
    for (start, end), s in zip(regions, said):
        assert abs(start - (s.start - pad)) < 0.1 and abs(end - (s.end + pad)) < 0.15, (start, end, s)
    assert not any(a < 25.0 and b > 15.0 for a, b in regions)


def test_silence_and_noise_floor() -> None:
    sr = 16000
    assert speech_regions(np.zeros(sr * 5, dtype=np.float32), sr) == []
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(sr * 6) * 0.003).astype(np.float32)  # about -50 dBFS of background noise
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(sr) / sr).astype(np.float32)
    hiss[2 * sr:3 * sr] += tone
    regions = speech_regions(hiss, sr)
    assert len(regions) == 1 and abs(regions[0][0] - 1.8) < 0.05 and abs(regions[0][1] - 3.2) < 0.05


def test_plan_packs_close_speech_skips_long_silence_and_splits_long_speech_with_overlap() -> None:
    opts = ChunkOptions(chunk_s=30.0, overlap_s=2.0, max_gap_s=2.0)
    chunks = plan_chunks([(1, 5), (6, 10), (20, 24), (40, 110)], opts)
    assert [(c.start, c.end) for c in chunks[:2]] == [(1, 10), (20, 24)]  # 1 s gap packed, 10 s gap skipped
    windows = chunks[2:]
    assert len(windows) == 3 and windows[0].start == 40 and windows[-1].end == 110
    assert all(c.duration <= 30.0 + 1e-9 for c in windows)
    assert [c.overlaps_previous for c in windows] == [False, True, True]
    for a, b in zip(windows, windows[1:]):
        assert a.end - b.start == pytest.approx(2.0, abs=0.002)
    assert sum(c.duration for c in chunks) < 110 - 1  # the silences are never sent to the engine
    assert Chunk.from_dict(windows[1].to_dict()) == windows[1]
    with pytest.raises(ValueError, match="overlap_s less than half"):
        ChunkOptions(chunk_s=4, overlap_s=3)


def test_merge_keeps_each_word_of_an_overlap_once() -> None:
    a = Chunk(0, 0.0, 30.0, ((0.0, 30.0),))
    b = Chunk(1, 28.0, 58.0, ((28.0, 58.0),), overlaps_previous=True)
    seg_a = Segment(25.0, 30.0, "one two three four", (Word(25.0, 26.0, "one"), Word(26.0, 27.5, "two"),
                                                        Word(28.2, 28.8, "three"), Word(29.2, 29.9, "four")))
    seg_b = Segment(28.1, 31.0, "three four five", (Word(28.3, 28.9, "three"), Word(29.1, 29.8, "four"),
                                                    Word(30.2, 31.0, "five")))
    merged = merge_chunks([a, b], [[seg_a], [seg_b]])
    words = [w.text for s in merged for w in s.words]
    assert words == ["one", "two", "three", "four", "five"]  # the cut is at 29.0: no word twice, none lost
    assert [s.text for s in merged] == ["one two three", "four five"]
    assert all(x.start <= y.start for x, y in zip(merged, merged[1:]))


def test_merge_of_segments_without_words_keeps_them_by_their_middle() -> None:
    a = Chunk(0, 0.0, 30.0)
    b = Chunk(1, 28.0, 58.0, overlaps_previous=True)
    merged = merge_chunks([a, b], [[Segment(20, 28.5, "x"), Segment(28.0, 30.0, "y")],
                                   [Segment(28.0, 30.0, "y"), Segment(30, 40, "z")]])
    assert [s.text for s in merged] == ["x", "y", "z"]
