"""`vlscope video transcript` end to end, as a user runs it: a real process, real speech files, PocketSphinx."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.speech.exports import parse_srt, parse_vtt
from core.speech.types import Transcript
from core.speech.wer import word_errors

ROOT = Path(__file__).parents[2]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLSCOPE_")}
    env.update(VLSCOPE_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               VLSCOPE_SPEECH_MODEL="nobody/no-such-whisper", OMP_NUM_THREADS="1")
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "core.cli", "video", "transcript", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_transcript_of_an_audio_file_to_stdout_then_from_the_cache_to_a_file(cli_env, short_wav,
                                                                              tmp_path: Path) -> None:
    wav, said = short_wav
    out = _run(cli_env, str(wav), "--format", "srt")
    assert out.returncode == 0, out.stderr
    cues = parse_srt(out.stdout)
    assert len(cues) == 2
    for cue, s in zip(cues, said):
        assert abs(cue.start - s.start) < 0.5 and abs(cue.end - s.end) < 0.5, (cue, s)
    assert word_errors(" ".join(s.text for s in said), " ".join(c.text for c in cues)).wer < 0.6
    err = out.stderr
    assert "engine: pocketsphinx: The speech model nobody/no-such-whisper is not on this machine" in err
    assert "transcribing 0:00–0:02 (chunk 1 of 2)" in err  # progress on stderr, one line per step off a terminal
    assert "transcript: 2 segments" in err and "language en" in err and "by pocketsphinx" in err
    assert "note: Made by PocketSphinx" in err and "hf download nobody/no-such-whisper" in err
    assert "Traceback" not in err

    target = tmp_path / "meeting.vtt"
    again = _run(cli_env, str(wav), "--out", str(target), "--no-progress")  # format from the suffix
    assert again.returncode == 0, again.stderr
    assert again.stdout == "" and f"written to {target}" in again.stderr
    assert [(c.start, c.end, c.text) for c in parse_vtt(target.read_text())] == \
        [(c.start, c.end, c.text) for c in cues]
    refused = _run(cli_env, str(wav), "--out", str(target))
    assert refused.returncode == 1 and "already exists; give --force to replace it" in refused.stderr


def test_transcript_of_a_video_as_json(cli_env, short_video: Path, short_wav) -> None:
    out = _run(cli_env, str(short_video), "--engine", "pocketsphinx", "--format", "json", "--no-progress")
    assert out.returncode == 0, out.stderr
    t = Transcript.from_dict(json.loads(out.stdout))
    assert (t.engine, t.language, t.complete, t.chunks) == ("pocketsphinx", "en", True, 2)
    assert abs(t.segments[0].start - short_wav[1][0].start) < 0.5 and t.words


def test_a_video_without_sound_is_one_clear_line(cli_env, silent_video: Path) -> None:
    out = _run(cli_env, str(silent_video), "--engine", "pocketsphinx")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("error: no-sound.mp4 has no audio track (it holds pictures only)")
    assert "Choose the version of the video with its sound" in out.stderr and "Traceback" not in out.stderr


def test_missing_speech_weights_name_the_download_and_the_setting(cli_env, short_wav) -> None:
    out = _run(cli_env, str(short_wav[0]), "--engine", "whisper")
    assert out.returncode == 1
    assert out.stderr.startswith("error: Speech model 'nobody/no-such-whisper' is not available")
    assert "hf download nobody/no-such-whisper" in out.stderr and "--engine pocketsphinx" in out.stderr


def test_help_lists_the_command() -> None:
    out = subprocess.run([sys.executable, "-m", "core.cli", "video", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert "transcript" in out.stdout
