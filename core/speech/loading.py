"""Which speech engine runs, and finding its weights: the same way as the vision model's (a local folder, the local
Hugging Face cache, or a download when allowed), with the same clear message when they are missing.

Settings: `speech_engine` (auto, whisper, qwen3_asr, pocketsphinx), `speech_model` (hub id or folder of a Whisper
or Qwen3-ASR checkpoint), `speech_device`. `auto` runs the transformers model when its weights are already here
(never downloading to find out) and PocketSphinx otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.speech.engine import SpeechEngine
from core.speech.errors import SpeechEngineUnavailable, SpeechModelUnavailable
from core.speech.weights import weights_fingerprint  # noqa: F401 - where callers look for it

log = logging.getLogger(__name__)

ENGINES = ("auto", "whisper", "qwen3_asr", "pocketsphinx")
DEFAULT_WHISPER = "openai/whisper-large-v3-turbo"
DEFAULT_QWEN3_ASR = "Qwen/Qwen3-ASR-1.7B-hf"
_KINDS = {"whisper": "whisper", "qwen3_asr": "qwen3_asr"}  # config.json model_type -> engine name


def qwen3_asr_supported() -> bool:
    """True when the installed transformers has Qwen3-ASR (transformers 5.24 has it; 5.17 does not)."""
    return importlib.util.find_spec("transformers.models.qwen3_asr") is not None


def _settings_value(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, None)
    return default if value in (None, "") else value


def normalise_engine(name: str | None) -> str:
    """'auto', 'whisper', 'qwen3_asr' or 'pocketsphinx' from what a user typed ('Qwen3-ASR', 'sphinx'...)."""
    text = (name or "auto").strip().lower().replace("-", "_")
    aliases = {"sphinx": "pocketsphinx", "qwen3asr": "qwen3_asr", "qwen": "qwen3_asr", "asr": "qwen3_asr"}
    text = aliases.get(text, text)
    if text not in ENGINES:
        raise SpeechEngineUnavailable(f"There is no speech engine called {name!r}.",
                                      f"Choose one of {', '.join(ENGINES)}.")
    return text


def speech_model_id(settings: Any, engine: str) -> str:
    """The checkpoint the transformers engine `engine` loads: the `speech_model` setting (its default is Whisper's
    large-v3-turbo; for qwen3_asr with that default left as it is, Qwen3-ASR 1.7B)."""
    model = str(_settings_value(settings, "speech_model", DEFAULT_WHISPER))
    if engine == "qwen3_asr" and model == DEFAULT_WHISPER:
        return DEFAULT_QWEN3_ASR
    return model


def resolve_speech_model(model: str, offline: bool, local_only: bool = False) -> Path:
    """The folder holding the speech model's files: a local folder, the local HF cache or (when allowed and not
    `local_only`) a download. SpeechModelUnavailable with the fix otherwise."""
    from core.vlm.base import ModelUnavailable
    from core.vlm.loading import resolve_model

    try:
        return resolve_model(model, offline or local_only)
    except ModelUnavailable as exc:
        reason = exc.reason
        if local_only and not offline and "offline mode is on" in reason:
            reason = "it is not in the local Hugging Face cache"
        raise SpeechModelUnavailable(model, reason) from None


def model_kind(path: Path) -> str | None:
    """'whisper' or 'qwen3_asr' from the checkpoint's config.json (None for another kind of model)."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _KINDS.get(str(config.get("model_type", "")))


@dataclass
class EngineChoice:
    """Which engine a transcription will use and why. model: the checkpoint (a hub id or folder; PocketSphinx's
    built-in model name); path: its resolved folder (transformers engines); reason: one plain sentence."""

    engine: str
    model: str
    reason: str
    path: str | None = None
    requested: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def choose_engine(settings: Any, requested: str | None = None) -> EngineChoice:
    """The engine `requested` (default: the `speech_engine` setting) resolves to here.

    'auto': the transformers model of `speech_model` when its weights are already on this machine, else
    PocketSphinx. An engine named outright must be usable: SpeechModelUnavailable / SpeechEngineUnavailable
    (cause + fix) otherwise.
    """
    from core.speech.sphinx import MODEL as SPHINX_MODEL

    name = normalise_engine(requested if requested is not None else _settings_value(settings, "speech_engine", "auto"))
    offline = bool(getattr(settings, "offline", False))
    if name == "pocketsphinx":
        return EngineChoice("pocketsphinx", SPHINX_MODEL, "PocketSphinx was chosen.", requested=name)
    if name == "auto":
        model = speech_model_id(settings, "whisper")
        try:
            path = resolve_speech_model(model, offline, local_only=True)
        except SpeechModelUnavailable as exc:
            return EngineChoice("pocketsphinx", SPHINX_MODEL,
                                f"The speech model {model} is not on this machine ({exc.reason}), so the offline "
                                "engine PocketSphinx transcribes (English only).", requested=name)
        kind = model_kind(path)
        if kind is None:
            return EngineChoice("pocketsphinx", SPHINX_MODEL, f"{model} is not a Whisper or Qwen3-ASR checkpoint, so "
                                "the offline engine PocketSphinx transcribes (English only).", requested=name)
        if kind == "qwen3_asr" and not qwen3_asr_supported():
            return EngineChoice("pocketsphinx", SPHINX_MODEL, f"{model} is a Qwen3-ASR model, which this transformers "
                                "cannot run, so the offline engine PocketSphinx transcribes.", requested=name)
        return EngineChoice(kind, model, f"{model} found on this machine.", str(path), requested=name)
    if name == "qwen3_asr" and not qwen3_asr_supported():
        import transformers

        raise SpeechEngineUnavailable(
            f"The installed transformers {transformers.__version__} has no Qwen3-ASR.",
            "Upgrade transformers (.venv/bin/pip install -U 'transformers>=5.24'), or choose the whisper or "
            "pocketsphinx engine.")
    model = speech_model_id(settings, name)
    path = resolve_speech_model(model, offline)
    kind = model_kind(path)
    if kind != name:
        raise SpeechEngineUnavailable(
            f"{model} is {'a ' + kind + ' model' if kind else 'not a speech model VLScope knows'}, not a "
            f"{'Whisper' if name == 'whisper' else 'Qwen3-ASR'} one.",
            f"Point the setting `speech_model` at a {'Whisper' if name == 'whisper' else 'Qwen3-ASR'} checkpoint, or "
            f"choose the {kind or 'pocketsphinx'} engine.")
    return EngineChoice(name, model, f"{model} was chosen.", str(path), requested=name)


def create_speech_engine(settings: Any, choice: EngineChoice | None = None) -> SpeechEngine:
    """The engine of `choice` (default: `choose_engine(settings)`), not loaded yet."""
    choice = choice or choose_engine(settings)
    device = str(_settings_value(settings, "speech_device", "auto"))
    if choice.engine == "pocketsphinx":
        from core.speech.sphinx import PocketSphinxEngine

        return PocketSphinxEngine()
    if choice.engine == "whisper":
        from core.speech.whisper import WhisperEngine

        return WhisperEngine(choice.model, Path(choice.path or choice.model), device=device)
    if choice.engine == "qwen3_asr":
        from core.speech.qwen3_asr import Qwen3AsrEngine

        return Qwen3AsrEngine(choice.model, Path(choice.path or choice.model), device=device)
    raise SpeechEngineUnavailable(f"There is no speech engine called {choice.engine!r}.",
                                  f"Choose one of {', '.join(ENGINES)}.")
