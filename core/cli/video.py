"""`vlscope video probe|plan|analyze`: the video pipeline from a terminal, filling the same cache.

Other modules add subcommands to the group with `add_video_command(name, help)`, which returns an
argparse parser to fill (set `func` with `set_defaults`), or by listing a `register_video(video_sub)`
function in VIDEO_SUBCOMMAND_MODULES (e.g. captions and chapters modules). `video_subparsers()`
returns the group's subparsers once `register` has run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.cli.base import human_bytes
from core.cli.errors import CliError
from core.vlm.shapes import SHAPES as KNOWN_SHAPES

# Modules adding `vlscope video ...` subcommands through `register_video(video_subparsers)`;
# a module that does not exist yet is skipped.
VIDEO_SUBCOMMAND_MODULES = ["core.cli.video_captions", "core.cli.video_chapters", "core.cli.video_ingest",
                            "core.cli.video_clip", "core.cli.video_transcript"]

_VIDEO_SUB: argparse._SubParsersAction | None = None  # type: ignore[type-arg]


def video_subparsers() -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """The `vlscope video` group's subparsers, to add subcommands to (after `register`)."""
    if _VIDEO_SUB is None:
        raise RuntimeError("the video command group is not registered yet; call core.cli.video.register first")
    return _VIDEO_SUB


def add_video_command(name: str, help_text: str) -> argparse.ArgumentParser:
    """A new `vlscope video NAME` parser (with the FILE argument); set its `func` with set_defaults."""
    parser = video_subparsers().add_parser(name, help=help_text, description=help_text)
    parser.add_argument("file", help="video file")
    return parser


def _probe(path: str) -> Any:
    from core.media import VideoError, probe_video

    try:
        return probe_video(path)
    except VideoError as exc:
        raise CliError(str(exc)) from exc


def _plan_from_args(args: argparse.Namespace) -> Any:
    from core.media import SamplingPlan, VideoError

    try:
        return SamplingPlan(fps=args.fps, min_frames=args.min_frames, max_frames=args.max_frames, start=args.start,
                            end=args.end, total_pixels=args.total_pixels or SamplingPlan.total_pixels)
    except VideoError as exc:
        raise CliError(str(exc)) from exc


def _add_plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=float, default=2.0, help="samples per second (default 2, Qwen3-VL's)")
    p.add_argument("--min-frames", type=int, default=4, help="fewest frames (default 4)")
    p.add_argument("--max-frames", type=int, default=768, help="most frames (default 768)")
    p.add_argument("--start", type=float, default=None, help="window start, seconds")
    p.add_argument("--end", type=float, default=None, help="window end, seconds")
    p.add_argument("--total-pixels", type=int, default=None, help="pixel budget over all frames (default 25165824)")


def cmd_probe(args: argparse.Namespace) -> int:
    info = _probe(args.file)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    kf = f"{info.keyframe_interval:.2f} s" if info.keyframe_interval else "unknown"
    print(f"file:       {info.path} ({human_bytes(info.size_bytes)}, {info.container})")
    print(f"video:      {info.codec} {info.width}x{info.height} (coded {info.coded_width}x{info.coded_height}, "
          f"rotation {info.rotation}), {info.pix_fmt}")
    print(f"duration:   {info.duration:.3f} s, {info.frame_count} frames{'' if info.frame_count_exact else ' (estimated)'}")
    print(f"frame rate: {info.fps:.3f} fps{' (variable)' if info.variable_frame_rate else ''}")
    print(f"key frames: every {kf}")
    print(f"audio:      {info.audio_codec if info.has_audio else 'none'}")
    for w in info.warnings:
        print(f"warning:    {w}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from core.media import VideoError
    from core.media.budget import plan_budget

    info = _probe(args.file)
    plan = _plan_from_args(args)
    gpu = int(args.gpu_memory_gb * 1024**3) if args.gpu_memory_gb else None
    try:
        est = plan_budget(info, plan, model_size=args.model, precision=args.precision, gpu_memory_bytes=gpu,
                          question=args.question, max_new_tokens=args.max_new_tokens)
    except VideoError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps({"probe": info.to_dict(), "plan": plan.to_dict(), "budget": est.to_dict()}, indent=2))
        return 0
    print(f"video:        {info.duration:.1f} s at {info.fps:.2f} fps, {info.width}x{info.height}")
    print(f"frames kept:  {est.frames} ({est.effective_fps:.3f} fps effective), {est.frame_width}x{est.frame_height} each")
    print(f"decode path:  {est.schedule.get('mode')}: {est.schedule.get('reason')}")
    print(f"timestamps:   one every {est.timestamp_resolution:.2f} s")
    print(f"tokens:       {est.visual_tokens} visual ({est.visual_tokens_per_pair}/pair x {est.pairs}), "
          f"{est.timestamp_text_tokens} timestamp text, {est.prompt_tokens} prompt total"
          f"{'' if est.exact else ' (text estimated)'}")
    print(f"memory:       weights {human_bytes(est.weights_bytes)}, KV cache {human_bytes(est.kv_cache_bytes)}, "
          f"peak about {human_bytes(est.peak_gpu_bytes)} ({args.model} {args.precision})")
    if est.fits is not None:
        print(f"fits:         {'yes' if est.fits else 'NO'} in {human_bytes(est.gpu_memory_bytes or 0)}"
              f"{' (' + est.gpu_name + ')' if est.gpu_name else ''}")
    for w in est.warnings:
        print(f"warning:      {w}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from core.analysis.video_pipeline import STAGES
    from core.app import Runtime
    from core.media import Cancelled, VideoError

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        raise CliError(f"unknown stage(s) {', '.join(bad) or '(none)'}; choose from {', '.join(STAGES)}")
    plan = _plan_from_args(args)
    bar = _Bar(enabled=not args.no_progress and sys.stderr.isatty())
    try:
        with Runtime.build() as runtime:
            result = runtime.video.analyse(args.file, tuple(stages), plan, progress=bar.update, refresh=args.refresh)
    except (VideoError, Cancelled) as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()
    if args.json:
        from core.media import schedule_frames

        out = {
            "probe": result.probe,
            "plan": result.plan | {"schedule": {k: v for k, v in schedule_frames(result.info, plan).to_dict().items()
                                                if k not in ("indices", "times")}},
            "events": [{"kind": e.kind, "start": round(e.start, 3), "end": round(e.end, 3), "label": e.label,
                        "confidence": e.confidence} for e in result.events],
            "from_cache": result.from_cache,
            "complete": result.complete,
            "warnings": result.warnings,
        }
        print(json.dumps(out, ensure_ascii=False))
        return 0
    cached = ", ".join(s for s, c in result.from_cache.items() if c) or "none"
    print(f"{result.path}: {len(result.events)} events in {result.seconds:.1f} s (from cache: {cached})")
    for e in result.events:
        conf = f" ({e.confidence:.2f})" if e.confidence is not None else ""
        print(f"  {e.start:9.3f} - {e.end:9.3f}  {e.kind:<7} {e.label}{conf}")
    for w in result.warnings:
        print(f"warning: {w}")
    return 0


class _Bar:
    """A one-line progress bar on stderr (rich when available)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        if enabled:
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self._progress = Progress(TextColumn("{task.description:<8}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                          TimeElapsedColumn(), TextColumn("{task.fields[msg]}"), transient=False)
                self._progress.start()
            except ImportError:
                self._progress = None

    def update(self, fraction: float, message: str = "", stage: str = "") -> None:
        """The Progress callback (core.events): one row per stage."""
        if not self.enabled:
            return
        if self._progress is None:
            print(f"\r{stage}: {fraction * 100:5.1f}% {message[:60]:<60}", end="", file=sys.stderr, flush=True)
            return
        if stage not in self._tasks:
            self._tasks[stage] = self._progress.add_task(stage, total=1.0, msg="")
        self._progress.update(self._tasks[stage], completed=fraction, msg=message[:50])

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif self.enabled:
            print(file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `video` command group (probe, plan, analyze, and subcommands other modules register)."""
    global _VIDEO_SUB
    video = sub.add_parser("video", help="probe, plan and analyse videos", description="Probe, plan and analyse videos.")
    vsub = video.add_subparsers(dest="video_command", metavar="SUBCOMMAND")
    _VIDEO_SUB = vsub
    video.set_defaults(func=lambda a: (video.print_help(), 2)[1])

    p = vsub.add_parser("probe", help="duration, fps, frames, size, rotation, codec, key frames, audio")
    p.add_argument("file", help="video file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_probe)

    p = vsub.add_parser("plan", help="what a sampling plan costs: frames, tokens, GPU memory (decodes nothing)")
    p.add_argument("file", help="video file")
    _add_plan_args(p)
    p.add_argument("--model", choices=["2b", "4b", "8b", *KNOWN_SHAPES], default="4b", metavar="MODEL",
                   help="Qwen3-VL size (2b, 4b, 8b; default 4b) or a known model such as qwen3-vl-30b-a3b or qwen3.5-9b")
    p.add_argument("--precision", choices=["bf16", "fp16", "fp32", "fp8", "8bit", "4bit"], default="bf16")
    p.add_argument("--gpu-memory-gb", type=float, default=None, help="memory to fit in (default: the GPU found)")
    p.add_argument("--question", default="", help="question text (counted in the prompt)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="answer length counted in the KV cache")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plan)

    p = vsub.add_parser("analyze", help="scene cuts, motion and on-screen text events (cached)")
    p.add_argument("file", help="video file")
    p.add_argument("--stages", default="scenes,motion,text", help="comma-separated: scenes,motion,text")
    _add_plan_args(p)
    p.add_argument("--refresh", action="store_true", help="recompute even when cached")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object: probe, plan, events")
    p.set_defaults(func=cmd_analyze)

    from core.cli import present_modules

    for module in present_modules(VIDEO_SUBCOMMAND_MODULES):
        module.register_video(vsub)
