"""Whisper through transformers: a tiny random Whisper saved locally, loaded through the path a downloaded
checkpoint takes (settings -> engine choice -> resolve -> from_pretrained), transcribing real speech into a
Transcript with monotone times; and the messages when the weights are missing or are not a speech model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.app.runtime import Runtime
from core.app.speech import better_model_note, cached_transcript, speech, transcribe
from core.settings import Settings
from core.speech.engine import ChunkAudio
from core.speech.errors import SpeechEngineUnavailable, SpeechModelUnavailable
from core.speech.loading import choose_engine


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One CPU thread for the tiny model: its operations are so small that a second thread only waits (on a busy
    2-core machine 10x slower); restored after each test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def _runtime(tmp_path: Path, **values) -> Runtime:
    return Runtime(Settings(cache_dir=tmp_path / "cache", **values))


def test_tiny_whisper_transcribes_through_the_users_path(tiny_whisper_dir: Path, speech_wav, tmp_path: Path) -> None:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    path, said = speech_wav
    runtime = _runtime(tmp_path, speech_model=str(tiny_whisper_dir))  # speech_engine auto: the weights are here
    assert speech(runtime).choice().engine == "whisper"
    seen: list[str] = []
    t = transcribe(runtime, path, progress=lambda f, m="", s="": seen.append(m))
    engine = speech(runtime).engine()
    assert (t.engine, t.model, t.complete, t.chunks) == ("whisper", str(tiny_whisper_dir), True, 4)
    assert engine.chunks_transcribed == 4 and engine.calls == 1  # four chunks in one batch on the CPU
    assert t.language in LANGUAGES and 0.0 < t.language_probability <= 1.0
    assert t.segments, "the random model wrote nothing at all"
    chunk_spans = [(said[0].start - 0.5, said[1].end + 0.5), (said[2].start - 0.5, said[2].end + 0.5),
                   (said[3].start - 0.5, said[3].end + 0.5), (said[4].start - 0.5, said[4].end + 0.5)]
    for a, b in zip(t.segments, t.segments[1:]):
        assert a.start <= b.start  # monotone
    for seg in t.segments:
        assert 0.0 <= seg.start <= seg.end <= t.duration_s
        assert any(lo <= seg.start and seg.end <= hi for lo, hi in chunk_spans), seg  # never in the silence
        assert seg.words, "word times come from the alignment heads"
        assert all(seg.start <= w.start <= w.end <= seg.end for w in seg.words)
    assert any("chunks 1-4 of 4" in m for m in seen)
    assert better_model_note(t) is None
    # the same file again: from the cache, nothing heard
    again = transcribe(runtime, path)
    assert again == t and engine.chunks_transcribed == 4
    from core.cache import hash_file

    assert cached_transcript(runtime, hash_file(path)) == t


def test_a_language_given_skips_detection(tiny_whisper_dir: Path, short_wav, tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, speech_engine="whisper", speech_model=str(tiny_whisper_dir))
    t = transcribe(runtime, short_wav[0], language="de")
    assert t.language == "de" and t.language_probability is None
    with pytest.raises(SpeechEngineUnavailable, match="Whisper does not know the language 'klingon'"):
        transcribe(runtime, short_wav[0], language="klingon")


def test_words_are_grouped_from_real_tokenizer_pieces(tiny_whisper_dir: Path) -> None:
    from core.speech.whisper import WhisperEngine

    engine = WhisperEngine("tiny", tiny_whisper_dir, device="cpu")
    engine.load()
    tok = engine.processor.tokenizer
    ids = tok.encode(" The budget, next year. 你好世界", add_special_tokens=False)
    times = [0.1 * (i + 1) for i in range(len(ids))]
    words = engine._words(ids, list(range(len(ids))), times, ChunkAudio(10.0, __import__("numpy").zeros(16000 * 5)),
                          10.0, 15.0)
    assert [w.text for w in words][:4] == ["The", "budget,", "next", "year."]
    assert "".join(w.text for w in words[4:]) == "你好世界"
    assert all("\ufffd" not in w.text for w in words)  # a character split over byte tokens stays whole
    assert words[0].start == pytest.approx(10.1) and all(a.start <= b.start for a, b in zip(words, words[1:]))


def test_auto_without_weights_falls_back_to_pocketsphinx_and_says_why(offline_hub, tmp_path: Path) -> None:
    choice = choose_engine(Settings(cache_dir=tmp_path, speech_model="nobody/no-such-whisper"))
    assert choice.engine == "pocketsphinx"
    assert "nobody/no-such-whisper is not on this machine" in choice.reason and "PocketSphinx" in choice.reason
    note = better_model_note("pocketsphinx", Settings(cache_dir=tmp_path, speech_model="nobody/no-such-whisper"))
    assert "hf download nobody/no-such-whisper" in note and "detect the language" in note
    assert "punctuation" in note and "100 languages" in note


def test_missing_weights_give_the_same_clear_message_as_the_vision_model(offline_hub, short_wav,
                                                                         tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, speech_engine="whisper", speech_model="nobody/no-such-whisper")
    with pytest.raises(SpeechModelUnavailable) as err:
        transcribe(runtime, short_wav[0])
    msg = str(err.value)
    assert msg.startswith("Speech model 'nobody/no-such-whisper' is not available: it is not in the local Hugging "
                          "Face cache and offline mode is on.")
    assert "`hf download nobody/no-such-whisper`" in msg and "VLSCOPE_SPEECH_MODEL (setting `speech_model`)" in msg
    assert "--engine pocketsphinx" in msg and "--engine" not in err.value.for_web()
    status = speech(runtime).status()
    assert status.engine == "none" and "nobody/no-such-whisper" in status.error
    with pytest.raises(SpeechModelUnavailable, match="folder .*missing-folder does not exist"):
        choose_engine(Settings(cache_dir=tmp_path, speech_engine="whisper", speech_model=str(tmp_path / "missing-folder")))


def test_a_checkpoint_that_is_not_a_speech_model_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SpeechEngineUnavailable) as err:
        choose_engine(Settings(cache_dir=tmp_path, speech_engine="whisper", speech_model=str(folder)))
    assert "is not a speech model VLScope knows, not a Whisper one" in str(err.value)
    assert "Point the setting `speech_model` at a Whisper checkpoint" in str(err.value)
    auto = choose_engine(Settings(cache_dir=tmp_path, speech_model=str(folder)))
    assert auto.engine == "pocketsphinx" and "is not a Whisper or Qwen3-ASR checkpoint" in auto.reason
