"""The speech room: a timed transcript of a video's sound or an audio file.

    audio   decode a file's sound to 16 kHz mono float32 (PyAV); a video without sound is a clear message
    vad     find the stretches of speech (energy-based): silence is never transcribed
    chunks  pack speech into chunks of at most 30 s, windows that overlap for long speech, merged without doubles
    engine  the SpeechEngine interface; whisper, qwen3_asr (transformers) and sphinx (PocketSphinx, offline)
    loading which engine runs (setting `speech_engine`, `speech_model`, `speech_device`) and finding its weights
    pipeline the resumable run: each chunk kept in the result cache as soon as it is heard; progress and cancel
    exports SRT, WebVTT, TXT, JSON (and SRT / WebVTT read back); wer: word error rate; tiny: a tiny random Whisper

The Transcript (types) is what pages, the CLI, the API and answers read: segments with words and times of the file,
the language, the engine and model that heard it.
"""

from core.speech.errors import (
    AudioUnreadable,
    NoAudioTrack,
    SpeechEngineUnavailable,
    SpeechError,
    SpeechModelUnavailable,
)
from core.speech.types import Segment, Transcript, Word

__all__ = ["AudioUnreadable", "NoAudioTrack", "Segment", "SpeechEngineUnavailable", "SpeechError",
           "SpeechModelUnavailable", "Transcript", "Word"]
