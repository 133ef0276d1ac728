"""Checks of the video pipeline on the shared evaluation files (not a test: prints results).

    python benchmarks/video_eval.py [--root ../shared/eval/video]

1. pyscenedetect/testvideo.mp4: three shots joined by fades through black (out/in at 6.17/7.24 s and
   12.15/13.35 s): expect exactly three shots, each boundary inside a black gap or fade.
2. moviepy/timecode_testpattern_16s.mp4: the timecode read by OCR at each sampled time should equal
   that frame's time within one frame for at least 90% of the samples.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    from core.media import probe_video
    from core.media.framepass import run_frame_pass
    from core.media.text import TextParams, parse_timecode, run_text_pass

    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "eval" / "video"))
    parser.add_argument("--text-fps", type=float, default=1.0)
    args = parser.parse_args()
    root = Path(args.root)

    path = root / "pyscenedetect" / "testvideo.mp4"
    info = probe_video(path)
    t = time.perf_counter()
    scenes = run_frame_pass(info, motion=False).scenes
    print(f"scenes on {path.name}: {len(scenes.shots)} shots in {time.perf_counter() - t:.1f} s")
    gaps = [(f.start, f.end) for f in scenes.fades]
    for s in scenes.shots:
        print(f"  shot {s.index + 1}: {s.start:7.3f} - {s.end:7.3f} s  in={s.transition_in:<5} out={s.transition_out:<5} "
              f"content {s.content_start:.3f} - {s.content_end:.3f}")
    inside = all(any(a - 1e-6 <= s.start <= b + 1e-6 for a, b in gaps) for s in scenes.shots[1:])
    print(f"  every boundary inside a black gap or fade: {inside}; truth fades out/in 6.17/7.24 and 12.15/13.35 s")

    path = root / "moviepy" / "timecode_testpattern_16s.mp4"
    info = probe_video(path)
    t = time.perf_counter()
    result, warnings = run_text_pass(info, TextParams(fps=args.text_fps))
    good = 0
    for r in result.readings:
        codes = [c for c in (parse_timecode(ln["text"], info.fps) for ln in r.lines) if c is not None]
        ok = bool(codes) and abs(codes[0] - r.time) <= 1.0 / info.fps + 1e-6
        good += ok
        print(f"  t={r.time:6.2f} s frame {r.index:4d}: read {codes[0] if codes else None}  {'ok' if ok else 'WRONG'}")
    n = len(result.readings)
    print(f"timecode on {path.name}: {good}/{n} = {good / max(1, n):.0%} within one frame "
          f"({result.ocr_calls} OCR calls, {time.perf_counter() - t:.1f} s){' warnings: ' + str(warnings) if warnings else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
