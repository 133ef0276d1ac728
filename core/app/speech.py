"""Transcripts, the same for the dashboard, the CLI and the API: the speech of a video or an audio file as a timed
`Transcript` (core.speech), made once per file, engine and model and kept in the result cache chunk by chunk (a
run that stops resumes; any front end reopens a finished one at once).

    from core.app.speech import transcribe, cached_transcript, better_model_note
    t = transcribe(runtime, "talk.mp4", progress=report, cancel=token)     # or engine="pocketsphinx"
    t = cached_transcript(runtime, input_hash)                             # no work: None when there is none yet
    note = better_model_note(t)                                            # PocketSphinx: what Whisper would add

One speech engine of each kind per runtime (the model loads on first use and is shared by every session).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.cache import hash_file
from core.errors import UserError
from core.events import CancelToken, Progress
from core.jobs.registry import Job, JobContext
from core.speech.engine import SpeechEngine
from core.speech.errors import SpeechEngineUnavailable
from core.speech.loading import EngineChoice, choose_engine, create_speech_engine, normalise_engine, speech_model_id
from core.speech.pipeline import (
    SpeechOptions,
    latest_transcript,
    partial_transcript,
    stored_transcript,
    transcribe_file,
)
from core.speech.types import Transcript

if TYPE_CHECKING:  # pragma: no cover - typing only
    from core.app.context import AppContext

STAGE_LABELS = {"audio": "reading the sound", "speech": "transcribing"}


@dataclass
class SpeechStatus:
    """Which engine transcribes here and why, in plain words (Home page, `vlscope info`).

    engine / model: what `auto` (or the setting) resolves to; reason: one sentence; better: what a better model
    would add and how to get it (empty when a transformers model runs); error: why the chosen engine cannot run.
    """

    engine: str
    model: str
    reason: str
    better: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


class _CallableToken:
    """A cancel token around `cancelled()` (a function answering True once the work should stop)."""

    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self._cancelled = cancelled

    def is_set(self) -> bool:
        return bool(self._cancelled())


def _token(cancel: Any, cancelled: Any) -> Any:
    tokens = [t if hasattr(t, "is_set") else _CallableToken(t) for t in (cancel, cancelled) if t is not None]
    if len(tokens) <= 1:
        return tokens[0] if tokens else None
    return _CallableToken(lambda: any(t.is_set() for t in tokens))


class SpeechService:
    """Transcripts over one runtime (its settings, result cache and jobs), with one engine of each kind."""

    def __init__(self, runtime: "AppContext") -> None:
        self.runtime = runtime
        self._engines: dict[tuple[str, str], SpeechEngine] = {}
        self._lock = threading.Lock()

    # -- engines
    def choice(self, engine: str | None = None) -> EngineChoice:
        """Which engine `engine` (default: the `speech_engine` setting) runs here; raises when a named one cannot."""
        return choose_engine(self.runtime.settings, engine)

    def engine(self, engine: str | None = None, choice: EngineChoice | None = None) -> SpeechEngine:
        """The engine object (created once per kind and model; its model loads on first use)."""
        choice = choice or self.choice(engine)
        key = (choice.engine, choice.model)
        with self._lock:
            if key not in self._engines:
                self._engines[key] = create_speech_engine(self.runtime.settings, choice)
            return self._engines[key]

    def status(self) -> SpeechStatus:
        """What transcribes here and why (never raises: an engine that cannot run is said in `error`)."""
        try:
            choice = self.choice()
        except UserError as exc:
            return SpeechStatus("none", "", "The chosen speech engine cannot run here.", error=str(exc))
        return SpeechStatus(choice.engine, choice.model, choice.reason,
                            better=better_model_note(choice.engine, self.runtime.settings) or "")

    # -- transcripts
    def transcribe(self, path: str | Path, *, engine: str | None = None, input_hash: str | None = None,
                   language: str | None = None, progress: Progress | None = None, cancel: CancelToken | None = None,
                   cancelled: Any = None, refresh: bool = False, options: SpeechOptions | None = None) -> Transcript:
        """The transcript of a video with sound or an audio file (cached chunks are read, not heard again).

        NoAudioTrack / AudioUnreadable / SpeechEngineUnavailable / SpeechModelUnavailable (UserErrors naming cause
        and fix); Cancelled when `cancel` (a CancelToken) or `cancelled` (a token or a function) says stop.
        """
        from core.files.store import using

        chosen = self.engine(engine)
        opts = _options(options, language)
        source = Path(path)
        with using(source):  # the upload store never evicts a file being read
            sha = input_hash or hash_file(source)
            return transcribe_file(source, chosen, self.runtime.cache, input_hash=sha, options=opts,
                                   progress=progress, cancel=_token(cancel, cancelled), refresh=refresh)

    def cached_transcript(self, input_hash: str, *, engine: str | None = None, language: str | None = None,
                          partial: bool = True) -> Transcript | None:
        """The file's transcript without doing any work: the finished one of the engine that would run (or of
        `engine`), else the one made last by any engine, else (with `partial`) what a running or stopped run has
        heard so far (complete=False). None when there is nothing."""
        cache = self.runtime.cache
        opts = _options(None, language)
        try:
            chosen: SpeechEngine | None = self.engine(engine)
        except UserError:  # the engine that would run cannot: another's transcript may still be there
            chosen = None
        if chosen is not None:
            done = stored_transcript(cache, input_hash, chosen.material(), opts)
            if done is not None:
                return done
        latest = latest_transcript(cache, input_hash)
        if latest is not None or not partial or chosen is None:
            return latest
        return partial_transcript(cache, input_hash, chosen.name, chosen.material(), opts)

    # -- in the background
    def job_key(self, input_hash: str, engine: str | None = None, language: str | None = None) -> str:
        """The job key of one file's transcription (same file, engine and language = same job, every session)."""
        return f"speech:{input_hash}:{normalise_engine(engine) if engine else 'setting'}:{language or 'detect'}"

    def start_transcription(self, path: str | Path, input_hash: str, title: str, *, engine: str | None = None,
                            language: str | None = None) -> Job:
        """`transcribe` as a background job (one per file, engine and language, shared by every session); its
        result is the Transcript. Progress: 'reading the sound: ...', 'transcribing: ...'."""
        def work(ctx: JobContext) -> Transcript:
            def progress(fraction: float, message: str = "", stage: str = "") -> None:
                ctx.progress(fraction, f"{STAGE_LABELS.get(stage, stage)}: {message}" if stage else message, stage)

            return self.transcribe(path, engine=engine, input_hash=input_hash, language=language,
                                   progress=progress, cancel=ctx.cancel)

        return self.runtime.jobs.submit(self.job_key(input_hash, engine, language), title, work)

    def transcription_job(self, input_hash: str, engine: str | None = None, language: str | None = None) -> Job | None:
        """The background transcription of these choices, if one was started in this process."""
        return self.runtime.jobs.get(self.job_key(input_hash, engine, language))

    def close(self) -> None:
        """Free every engine's model."""
        with self._lock:
            for e in self._engines.values():
                e.close()
            self._engines.clear()


def _options(options: SpeechOptions | None, language: str | None) -> SpeechOptions:
    opts = options or SpeechOptions()
    if language is not None and language != opts.language:
        from dataclasses import replace

        opts = replace(opts, language=language.strip().lower() or None)
    return opts


# ------------------------------------------------------------------------------------------ one per runtime
_SERVICES: "weakref.WeakKeyDictionary[Any, SpeechService]" = weakref.WeakKeyDictionary()
_SERVICES_LOCK = threading.Lock()


def speech(runtime: "AppContext") -> SpeechService:
    """The speech service of `runtime` (made once per runtime: its engines are shared by every caller)."""
    with _SERVICES_LOCK:
        try:
            service = _SERVICES.get(runtime)
        except TypeError:  # a runtime that cannot be weakly referenced: a service per call
            return SpeechService(runtime)
        if service is None:
            service = SpeechService(runtime)
            _SERVICES[runtime] = service
        return service


def transcribe(runtime: "AppContext", path: str | Path, *, engine: str | None = None,
               progress: Progress | None = None, cancelled: Any = None, cancel: CancelToken | None = None,
               input_hash: str | None = None, language: str | None = None, refresh: bool = False) -> Transcript:
    """The transcript of `path` through the runtime's cache and its speech engine (see SpeechService.transcribe)."""
    return speech(runtime).transcribe(path, engine=engine, input_hash=input_hash, language=language,
                                      progress=progress, cancel=cancel, cancelled=cancelled, refresh=refresh)


def cached_transcript(runtime: "AppContext", input_hash: str, *, engine: str | None = None,
                      language: str | None = None, partial: bool = True) -> Transcript | None:
    """The file's transcript without doing any work (see SpeechService.cached_transcript)."""
    return speech(runtime).cached_transcript(input_hash, engine=engine, language=language, partial=partial)


def better_model_note(transcript_or_engine: Transcript | str | None, settings: Any = None) -> str | None:
    """One short plain paragraph of what a better model would add, when PocketSphinx made the transcript (or is the
    engine named); None otherwise."""
    name = transcript_or_engine.engine if isinstance(transcript_or_engine, Transcript) else transcript_or_engine
    if name != "pocketsphinx":
        return None
    model = speech_model_id(settings, "whisper") if settings is not None else "openai/whisper-large-v3-turbo"
    return ("Made by PocketSphinx, the offline engine: English only, lower-case words without punctuation, and many "
            f"words wrong. A Whisper model ({model}) would detect the language, add punctuation, get far more words "
            "right and understand about 100 languages. To use it, run `hf download "
            f"{model}` on a machine with internet access and copy ~/.cache/huggingface here, or point the setting "
            "`speech_model` at a folder holding it.")


def speech_status(runtime: "AppContext") -> SpeechStatus:
    """Which engine transcribes here and why (never raises)."""
    return speech(runtime).status()


__all__ = ["SpeechEngineUnavailable", "SpeechService", "SpeechStatus", "better_model_note", "cached_transcript",
           "speech", "speech_status", "transcribe"]
