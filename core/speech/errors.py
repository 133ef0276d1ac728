"""Errors of the speech room a user can cause and fix: each names the cause and the fix."""

from __future__ import annotations

from core.errors import UserError


class SpeechError(UserError):
    """A file cannot be transcribed, or a speech engine cannot run: the message says why and what to do."""


class NoAudioTrack(SpeechError):
    """The file holds no sound to transcribe (a video without an audio track)."""


class AudioUnreadable(SpeechError):
    """The file cannot be opened or decoded as audio."""


class SpeechEngineUnavailable(SpeechError):
    """The chosen speech engine cannot run here (package missing, weights missing, wrong model kind)."""


class SpeechModelUnavailable(SpeechEngineUnavailable):
    """The speech model's weights cannot be found locally nor fetched (the same wording as the vision model's)."""

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        cause = f"Speech model {model!r} is not available: {reason}."
        fix = (f"Download it once on a machine with internet access: `hf download {model}`, then copy the Hugging "
               "Face cache (~/.cache/huggingface) here, or point VLSCOPE_SPEECH_MODEL (setting `speech_model`) at a "
               "local folder that holds config.json, the *.safetensors weights and the processor files. Without it, "
               "--engine pocketsphinx transcribes English offline.")
        web_fix = (f"Download it once on a machine with internet access: `hf download {model}`, then copy the Hugging "
                   "Face cache (~/.cache/huggingface) here, or point the setting `speech_model` at a local folder that "
                   "holds config.json, the *.safetensors weights and the processor files. Without it, the PocketSphinx "
                   "engine transcribes English offline.")
        super().__init__(cause, fix, web_fix)
