"""Sampling speed: ffmpeg's dense-decode limit, the common OpenCV recipe, and VLScope's sampler.

Makes a 10-minute and a 60-minute 1280x720 H.264 video (a key frame every 2 s) in a folder, then
times in one run:
  (a) 1 fps over 10 minutes: `ffmpeg -vf fps=1 -f null -`, OpenCV read() of every frame keeping one
      per second, and `sample_video` (target: at most 1.1x ffmpeg's time);
  (b) a 768-frame plan over 60 minutes: OpenCV read() of every frame keeping the plan's frames, and
      `sample_video` (target: at least 10x faster than the OpenCV recipe).

    python benchmarks/sampling.py [--folder /tmp/vlscope-bench] [--skip-60]

Not a test: it prints figures and ratios. It takes several minutes on a small CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ffmpeg_exe() -> str:
    """The ffmpeg binary: the system one, else imageio-ffmpeg's."""
    from shutil import which

    found = which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def make_video(path: Path, seconds: int) -> None:
    """A 1280x720 30 fps H.264 test pattern with a key frame every 2 s (made fast: ultrafast, low bitrate)."""
    if path.exists() and path.stat().st_size > 0:
        return
    tmp = path.with_suffix(".part.mp4")
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=30:duration={seconds}",
           "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "600k", "-g", "60", "-keyint_min", "60",
           "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(tmp)]
    subprocess.run(cmd, check=True)
    os.replace(tmp, path)


def time_ffmpeg(path: Path) -> float:
    """Seconds for `ffmpeg -i path -vf fps=1 -f null -`."""
    t = time.perf_counter()
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-vf", "fps=1", "-f", "null", "-"], check=True)
    return time.perf_counter() - t


def time_opencv_read(path: Path, keep: set[int]) -> tuple[float, int]:
    """(seconds, frames kept) for the common recipe: cv2 read() every frame, keep those in `keep`."""
    import cv2

    t = time.perf_counter()
    cap = cv2.VideoCapture(str(path))
    i = kept = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if i in keep:
            kept += 1
        i += 1
    cap.release()
    return time.perf_counter() - t, kept


def time_vlscope(path: Path, plan) -> tuple[float, int, str, float]:  # noqa: ANN001
    """(seconds, frames, decode mode, max shift s) for probe + sample_video (frames not kept in memory)."""
    from core.media import probe_video, sample_video

    t = time.perf_counter()
    info = probe_video(path)
    result = sample_video(info, plan, keep=False, on_batch=lambda b: None)
    return time.perf_counter() - t, result.decoded, result.schedule.mode, result.max_shift


def main() -> int:
    from core.media import SamplingPlan, probe_video, schedule_frames

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="/tmp/vlscope-bench")
    parser.add_argument("--skip-60", action="store_true", help="only the 10-minute case")
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    v10, v60 = folder / "bench_10min_720p.mp4", folder / "bench_60min_720p.mp4"
    t = time.perf_counter()
    make_video(v10, 600)
    if not args.skip_60:
        make_video(v60, 3600)
    print(f"videos ready in {time.perf_counter() - t:.1f} s ({os.cpu_count()} CPU cores)")

    # (a) 1 fps dense over 10 minutes
    info = probe_video(v10)
    plan_a = SamplingPlan(fps=1.0, max_frames=100_000)
    sched = schedule_frames(info, plan_a)
    ff = time_ffmpeg(v10)
    cv, cv_kept = time_opencv_read(v10, set(sched.indices))
    ours, n, mode, shift = time_vlscope(v10, plan_a)
    print("\n(a) 1 fps over 10 minutes (600 frames of 18,000)")
    print(f"  ffmpeg -vf fps=1 -f null -     {ff:7.2f} s")
    print(f"  OpenCV read() every frame      {cv:7.2f} s  ({cv_kept} kept)")
    print(f"  vlscope sample_video           {ours:7.2f} s  ({n} frames, {mode}, max shift {shift:.3f} s)")
    print(f"  ratio vlscope / ffmpeg         {ours / ff:7.2f}x  (target <= 1.1x)")
    print(f"  speed-up vs OpenCV read()      {cv / ours:7.2f}x")

    if not args.skip_60:
        info60 = probe_video(v60)
        plan_b = SamplingPlan(fps=2.0, max_frames=768)
        sched_b = schedule_frames(info60, plan_b)
        cv_b, kept_b = time_opencv_read(v60, set(sched_b.indices))
        ours_b, n_b, mode_b, shift_b = time_vlscope(v60, plan_b)
        print("\n(b) 768-frame plan over 60 minutes (one frame every 4.7 s)")
        print(f"  OpenCV read() every frame      {cv_b:7.2f} s  ({kept_b} kept)")
        print(f"  vlscope sample_video           {ours_b:7.2f} s  ({n_b} frames, {mode_b}, max shift {shift_b:.3f} s)")
        print(f"  speed-up vs OpenCV read()      {cv_b / ours_b:7.2f}x  (target >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
