"""`vlscope video transcript FILE [--format srt|vtt|txt|json] [--out PATH] [--engine ...]`: what is said in a video
or an audio file, with times. Progress goes to stderr, the transcript to stdout (or to --out). Chunks are kept in
the result cache as they are heard: an interrupted run resumes, and the dashboard shows the same transcript.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.errors import CliError
from core.cli.outputs import output_file

FORMATS = ("srt", "vtt", "txt", "json")
ENGINES = ("auto", "whisper", "qwen3_asr", "pocketsphinx")


class _Progress:
    """Progress on stderr: one rewritten line on a terminal, a line per new message otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last = ""

    def __call__(self, fraction: float, message: str = "", stage: str = "") -> None:
        if not self.enabled or not message:
            return
        line = f"{fraction * 100:5.1f}% {message}"
        if self.tty:
            print(f"\r{line[:100]:<100}", end="", file=sys.stderr, flush=True)
        elif message != self._last:
            print(line, file=sys.stderr, flush=True)
        self._last = message

    def close(self) -> None:
        if self.enabled and self.tty and self._last:
            print(file=sys.stderr)


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    if args.out:
        suffix = Path(args.out).suffix.lower().lstrip(".")
        if suffix in FORMATS:
            return suffix
    return "txt"


def _target(path: str, force: bool) -> Path:
    folder = Path(path).expanduser()
    return output_file(path, force, folder_fix=f"give a file name with --out, e.g. {folder / 'transcript.srt'}",
                       options="--out")


def cmd_transcript(args: argparse.Namespace) -> int:
    from core.app import Runtime
    from core.app.speech import better_model_note, speech
    from core.errors import Cancelled, UserError
    from core.speech.exports import export

    src = Path(args.file)
    if not src.is_file():
        raise CliError(f"{args.file} is not a file; check the path of the video or audio file")
    fmt = _format(args)
    target = _target(args.out, args.force) if args.out else None
    bar = _Progress(enabled=not args.no_progress)
    try:
        with Runtime.build() as runtime:
            service = speech(runtime)
            choice = service.choice(args.engine)
            if choice.requested == "auto" and not args.no_progress:
                print(f"engine: {choice.engine}: {choice.reason}", file=sys.stderr)
            transcript = service.transcribe(src, engine=args.engine, language=args.language, progress=bar,
                                            refresh=args.refresh)
            settings = runtime.settings
    except Cancelled as exc:
        raise CliError(f"{exc}; the chunks transcribed so far are kept in the cache, run again to resume") from exc
    except UserError as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()
    text = export(transcript, fmt)
    if fmt == "txt" and args.timestamps:
        from core.speech.exports import to_txt

        text = to_txt(transcript, timestamps=True)
    if target is not None:
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{target} could not be written ({exc.strerror or exc}); choose a folder you can write to") \
                from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    lang = transcript.language or "unknown"
    if transcript.language_probability is not None:
        lang += f" ({transcript.language_probability:.0%} sure)"
    speech_s = transcript.speech_s or 0.0
    summary = (f"transcript: {len(transcript.segments)} segments, {len(transcript.words)} words, language {lang}, "
               f"by {transcript.engine} ({transcript.model}); {speech_s:.1f} s of speech in "
               f"{transcript.duration_s:.1f} s")
    print(summary + (f"; written to {target}" if target is not None else ""), file=sys.stderr)
    for w in transcript.warnings:
        print(f"warning: {w}", file=sys.stderr)
    note = better_model_note(transcript, settings)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def register_video(vsub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `vlscope video transcript` to the video command group."""
    p = vsub.add_parser("transcript", help="what is said in a video or an audio file, with times (srt, vtt, txt, json)",
                        description="Transcribe the speech of a video or an audio file (wav, mp3, m4a, flac, ogg...). "
                                    "Silence is skipped; long sound is heard in chunks kept in the result cache, so an "
                                    "interrupted run resumes. Progress goes to stderr, the transcript to stdout or "
                                    "--out.")
    p.add_argument("file", help="video or audio file")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="srt, vtt, txt or json (default: from --out's suffix, else txt)")
    p.add_argument("--out", help="write the transcript to this file instead of stdout")
    p.add_argument("--engine", choices=ENGINES, default=None,
                   help="speech engine (default: the speech_engine setting, auto: Whisper when its weights are here, "
                        "else PocketSphinx)")
    p.add_argument("--language", default=None, help="the language spoken as an ISO code (e.g. en, de, zh): skips "
                                                    "detection")
    p.add_argument("--timestamps", action="store_true", help="with --format txt: start each line with its time")
    p.add_argument("--refresh", action="store_true", help="transcribe again even when cached")
    p.add_argument("--force", action="store_true", help="replace --out when it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_transcript)
