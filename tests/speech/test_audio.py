"""Sound from audio files and videos' audio tracks, decoded with PyAV to 16 kHz mono float32 at the file's times;
files without usable sound get a message naming the cause and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.speech.audio import decode_audio, probe_audio
from core.speech.errors import AudioUnreadable, NoAudioTrack
from core.speech.vad import speech_regions
from speechgen import convert, mux_video


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".m4a", ".flac", ".ogg"])
def test_audio_files_decode_to_16k_mono_float32_at_their_times(short_wav, speech_dir: Path, suffix: str) -> None:
    wav, said = short_wav
    path = wav if suffix == ".wav" else convert(wav, speech_dir / f"short{suffix}")
    audio = decode_audio(path)
    assert audio.sample_rate == 16000 and audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.source == "audio file"
    assert abs(audio.duration_s - 7.5) < 0.08, audio.duration_s  # mp3/aac add a few ms of encoder delay at most
    regions = speech_regions(audio.samples, audio.sample_rate)
    assert len(regions) == 2
    assert abs(regions[0][0] + 0.2 - said[0].start) < 0.1 and abs(regions[1][0] + 0.2 - said[1].start) < 0.1


def test_a_videos_audio_track_keeps_the_videos_times(short_wav, speech_dir: Path, short_video: Path) -> None:
    info = probe_audio(short_video)
    assert info.has_audio and info.has_video and info.codec == "aac"
    audio = decode_audio(short_video)
    assert audio.source == "audio track of a video"
    late = decode_audio(mux_video(short_wav[0], speech_dir / "late-sound.mp4", 9.0, audio_delay_s=1.5))
    first = speech_regions(late.samples, late.sample_rate)[0][0] + 0.2
    assert abs(first - (short_wav[1][0].start + 1.5)) < 0.1  # the late track is padded, not pulled forward


def test_a_video_without_sound_says_so_with_the_fix(silent_video: Path) -> None:
    assert probe_audio(silent_video).has_audio is False
    with pytest.raises(NoAudioTrack) as err:
        decode_audio(silent_video)
    msg = str(err.value)
    assert "no-sound.mp4 has no audio track" in msg and "nothing to transcribe" in msg
    assert "Choose the version of the video with its sound" in msg


def test_unreadable_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "notes.mp3"
    junk.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioUnreadable) as err:
        decode_audio(junk)
    assert "notes.mp3 cannot be read as audio or video" in str(err.value)
    assert "check that the file is complete" in str(err.value)
    with pytest.raises(AudioUnreadable, match="gone.wav is not a file that exists here. Check the path"):
        decode_audio(tmp_path / "gone.wav")
