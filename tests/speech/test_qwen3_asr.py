"""Qwen3-ASR (transformers >= 5.24): a tiny random model saved locally, chosen by the settings and loaded through
the users' path; each stretch of speech becomes one segment with that stretch's times."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.app.runtime import Runtime
from core.app.speech import speech, transcribe
from core.settings import Settings
from core.speech.loading import choose_engine, qwen3_asr_supported

pytestmark = pytest.mark.skipif(not qwen3_asr_supported(), reason="this transformers has no Qwen3-ASR (5.24 has)")


@pytest.fixture(scope="module")
def tiny_qwen3_asr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.speech.tiny import build_tiny_qwen3_asr

    return build_tiny_qwen3_asr(tmp_path_factory.mktemp("tiny-qwen3-asr"))


def test_tiny_qwen3_asr_transcribes_stretches_of_speech(tiny_qwen3_asr: Path, short_wav, tmp_path: Path) -> None:
    import torch

    wav, said = short_wav
    assert choose_engine(Settings(cache_dir=tmp_path, speech_model=str(tiny_qwen3_asr))).engine == "qwen3_asr"
    runtime = Runtime(Settings(cache_dir=tmp_path / "cache", speech_engine="qwen3_asr",
                               speech_model=str(tiny_qwen3_asr)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = transcribe(runtime, wav, language="en")
    finally:
        torch.set_num_threads(threads)
    assert (t.engine, t.model, t.language, t.complete, t.chunks) == ("qwen3_asr", str(tiny_qwen3_asr), "en", True, 2)
    assert speech(runtime).engine().chunks_transcribed == 2
    assert len(t.segments) == 2 and all(s.text and not s.words for s in t.segments)
    for seg, s in zip(t.segments, said):  # the voice detector's stretch: the sentence, padded by 0.2 s
        assert abs(seg.start - s.start) < 0.5 and abs(seg.end - s.end) < 0.5, (seg, s)
