"""Probe on many containers and codecs, and bad input: each gives correct output or a clear VideoError."""

from __future__ import annotations

import time
from fractions import Fraction

import numpy as np
import pytest

from core.media import SamplingPlan, VideoError, probe_video, sample_video, schedule_frames
from core.media.budget import plan_budget
from tests.media.conftest import pattern, run_ffmpeg, write_video


def test_probe_mp4_figures(cuts_video):
    info = probe_video(cuts_video)
    assert (info.width, info.height, info.fps, info.frame_count) == (320, 180, 25.0, 150)
    assert info.duration == pytest.approx(6.0, abs=0.05)
    assert info.codec == "h264" and not info.has_audio and info.rotation == 0
    assert info.keyframe_interval == pytest.approx(2.0, abs=0.05) and not info.variable_frame_rate
    assert probe_video(cuts_video).to_dict() == info.to_dict()


@pytest.mark.parametrize("ext,args", [
    ("mkv", ["-c:v", "libx264", "-preset", "ultrafast"]),
    ("webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"]),
    ("mov", ["-c:v", "libx264", "-preset", "ultrafast"]),
    ("avi", ["-c:v", "mpeg4"]),
])
def test_containers_and_codecs(media_dir, cuts_video, ext, args):
    out = media_dir / f"conv.{ext}"
    run_ffmpeg("-i", str(cuts_video), "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-t", "3", *args, str(out))
    info = probe_video(out)
    assert (info.width, info.height) == (320, 180) and info.fps == pytest.approx(25)
    assert info.duration == pytest.approx(3.0, abs=0.15) and info.has_audio
    assert abs(info.frame_count - 75) <= (1 if info.frame_count_exact else 4)  # mkv/webm: estimated
    video = sample_video(info, SamplingPlan(fps=2))
    assert len(video.frames) == 6


def test_rotated_phone_video(media_dir, cuts_video):
    out = media_dir / "rotated.mp4"
    run_ffmpeg("-i", str(cuts_video), "-c", "copy", "-metadata:s:v", "rotate=90", str(out))
    info = probe_video(out)
    assert info.rotation in (90, 270) and (info.width, info.height) == (180, 320)
    video = sample_video(info, SamplingPlan(fps=1))
    h, w = video.frames[0].image.shape[:2]
    assert h > w  # frames come upright (portrait)
    pyav = sample_video(info, SamplingPlan(fps=1), backend="pyav")
    assert np.abs(pyav.frames[0].image.astype(int) - video.frames[0].image.astype(int)).mean() < 8


def test_variable_frame_rate(media_dir):
    # 60 frames: gaps of 20 ms and 80 ms alternate in blocks (time base 1/1000)
    pts = [0]
    for i in range(1, 60):
        pts.append(pts[-1] + (20 if (i // 10) % 2 == 0 else 80))
    path = write_video(media_dir / "vfr.mp4", lambda i: np.roll(pattern(7), i * 3, axis=1), 60, fps=25,
                       pts_of=lambda i: pts[i], time_base=Fraction(1, 1000))
    info = probe_video(path)
    assert info.variable_frame_rate
    assert info.duration == pytest.approx(pts[-1] / 1000, abs=0.1)
    video = sample_video(info, SamplingPlan(fps=2))
    times = [f.time for f in video.frames]
    assert times == sorted(times) and len(video.frames) >= 4
    assert max(times) <= info.duration + 0.1


def test_bad_inputs_give_clear_messages(media_dir, cuts_video):
    empty = media_dir / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe_video(empty)
    text = media_dir / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError, match="not a video"):
        probe_video(text)
    import cv2

    png = media_dir / "picture.mp4"
    ok, buf = cv2.imencode(".png", pattern(3))
    png.write_bytes(buf.tobytes())
    with pytest.raises(VideoError, match="still image"):
        probe_video(png)
    audio = media_dir / "audio.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(audio))
    with pytest.raises(VideoError, match="audio only"):
        probe_video(audio)
    with pytest.raises(VideoError, match="does not exist"):
        probe_video(media_dir / "missing.mp4")


def test_file_cut_in_half(media_dir, cuts_video):
    faststart = media_dir / "faststart.mp4"
    run_ffmpeg("-i", str(cuts_video), "-c", "copy", "-movflags", "+faststart", str(faststart))
    data = faststart.read_bytes()
    half = media_dir / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    info = probe_video(half)  # the index says 6 s; the data stops early
    t = time.monotonic()
    video = sample_video(info, SamplingPlan(fps=2), stall_s=10)
    assert time.monotonic() - t < 15
    assert 0 < len(video.frames) < 12 and not video.complete and video.warnings
    # moov at the end: half a file has no index at all
    plain = media_dir / "half_plain.mp4"
    plain.write_bytes(cuts_video.read_bytes()[: cuts_video.stat().st_size // 2])
    with pytest.raises(VideoError, match="truncated|not a video|no frame"):
        probe_video(plain)


def test_8k_frames_are_planned_within_budget(media_dir):
    out = media_dir / "8k.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=7680x4320:rate=2:duration=2", "-c:v", "libx264", "-preset",
               "ultrafast", "-pix_fmt", "yuv420p", str(out))
    info = probe_video(out)
    assert (info.width, info.height) == (7680, 4320)
    sched = schedule_frames(info, SamplingPlan())
    assert sched.width * sched.height <= 768 * 32 * 32 and sched.width % 32 == 0
    video = sample_video(info, SamplingPlan())
    assert video.frames[0].image.shape == (sched.height, sched.width, 3)


def test_ten_hour_file_is_planned_without_decoding(media_dir):
    out = media_dir / "ten_hours.mp4"
    run_ffmpeg("-f", "lavfi", "-i", "color=c=blue:size=64x36:rate=1:duration=36000", "-c:v", "libx264", "-preset",
               "ultrafast", "-g", "10", "-pix_fmt", "yuv420p", str(out))
    t = time.monotonic()
    info = probe_video(out)
    est = plan_budget(info, SamplingPlan(), model_size="2b", look_for_gpu=False, gpu_memory_bytes=80 * 1024**3)
    elapsed = time.monotonic() - t
    assert elapsed < 5, elapsed
    assert info.duration == pytest.approx(36000, abs=1) and info.frame_count == 36000
    assert est.frames == 768 and est.effective_fps == pytest.approx(768 / 36000, rel=0.01)
    assert est.schedule["mode"] == "keyframes"
