"""SamplingPlan -> FrameSchedule -> frames with exact source frame numbers; fast paths; watchdog."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.media import SamplingPlan, VideoError, probe_video, sample_video, schedule_frames
from core.media.decode import Watched
from core.media.sampling import frame_count_for


def test_qwen_rules_for_frame_count():
    plan = SamplingPlan()
    assert frame_count_for(60.0, 1800, plan) == 120  # 2 fps
    assert frame_count_for(1.0, 30, plan) == 4  # min frames
    assert frame_count_for(3600.0, 108000, plan) == 768  # max frames
    assert frame_count_for(2.3, 69, SamplingPlan(fps=1.0)) == 4
    assert frame_count_for(5.5, 165, SamplingPlan(fps=1.0)) % 2 == 0


def test_dense_sampling_gives_exact_frame_numbers_and_times(cuts_video):
    info = probe_video(cuts_video)
    plan = SamplingPlan(fps=2.0, mode="dense")
    sched = schedule_frames(info, plan)
    assert sched.frames == 12 and sched.indices[0] == 0 and sched.indices[-1] == 149
    video = sample_video(info, plan)
    assert video.indices == sched.indices and video.complete and video.max_shift == 0
    assert video.frames[0].image.shape == (sched.height, sched.width, 3)
    assert sched.width % 32 == 0 and sched.height % 32 == 0
    # the frame content matches the source frame number: frames after the cut at 100 show shot 3
    from tests.media.conftest import pattern

    f = next(fr for fr in video.frames if fr.index >= 100)
    expected = np.roll(pattern(3), f.index % 50, axis=1)
    import cv2

    expected = cv2.resize(expected, (sched.width, sched.height), interpolation=cv2.INTER_AREA)
    assert np.abs(f.image.astype(int) - expected.astype(int)).mean() < 20
    part = video.to_video_part(plan)
    assert part.frame_indices == video.indices and part.source_fps == 25
    assert part.timestamps[1] == pytest.approx(video.indices[1] / 25)


def test_keyframe_path_reports_shift(media_dir):
    from tests.media.conftest import pattern, write_video

    path = write_video(media_dir / "kf.mp4", lambda i: np.roll(pattern(9), i, axis=1), 250, gop=25)  # key every 1 s
    info = probe_video(path)
    assert info.keyframe_interval == pytest.approx(1.0, abs=0.05)
    plan = SamplingPlan(fps=0.4)  # one sample every 2.5 s > 1 s key frame interval
    sched = schedule_frames(info, plan)
    assert sched.mode == "keyframes"
    video = sample_video(info, plan)
    assert len(video.frames) == sched.frames == 4
    assert all(i % 25 == 0 for i in video.indices)  # key frames only
    assert video.max_shift <= 1.0 + 1e-6  # the last target (9.96 s) is after the last key frame (9.0 s)
    assert all(abs(f.shift) <= 0.5 + 1e-6 for f in video.frames[:-1])
    for f, target in zip(video.frames, sched.times):
        assert f.shift == pytest.approx(f.time - target)
    dense = sample_video(info, SamplingPlan(fps=0.4, mode="dense"))
    assert dense.indices == sched.indices


def test_window_and_pixel_budget(cuts_video):
    info = probe_video(cuts_video)
    sched = schedule_frames(info, SamplingPlan(fps=4, start=1.0, end=3.0, total_pixels=32 * 32 * 40, min_pixels=32 * 32 * 2))
    assert sched.indices[0] == 25 and sched.indices[-1] == 75
    assert sched.frames == 8
    assert sched.frames * sched.width * sched.height <= 32 * 32 * 40 + 1
    assert sched.timestamp_resolution == pytest.approx(2 / sched.effective_fps)
    with pytest.raises(VideoError, match="starts at"):
        schedule_frames(info, SamplingPlan(start=100))
    with pytest.raises(VideoError, match="after its start"):
        SamplingPlan(start=3, end=2)


def test_streaming_batches_without_keeping_frames(cuts_video):
    info = probe_video(cuts_video)
    sizes: list[int] = []
    video = sample_video(info, SamplingPlan(fps=10, max_frames=60), batch_size=16, keep=False,
                         on_batch=lambda b: sizes.append(len(b)))
    assert video.frames == [] and sum(sizes) == 60 and max(sizes) == 16


def test_watchdog_stops_a_hanging_decoder():
    def producer(stop):
        yield 1
        yield 2
        time.sleep(30)  # a decoder that hangs
        yield 3

    w = Watched(producer, stall_s=1.0)
    t = time.monotonic()
    assert list(w) == [1, 2]
    assert time.monotonic() - t < 5 and w.stopped_early and "without a frame" in w.warnings[0]


def test_watchdog_keeps_frames_before_a_mid_file_error_and_cancels():
    def producer(stop):
        yield 1
        raise RuntimeError("Invalid data found when processing input")

    w = Watched(producer)
    assert list(w) == [1] and "decoding error" in w.warnings[0]

    from core.media import Cancelled

    cancel = threading.Event()

    def endless(stop):
        i = 0
        while not stop.is_set():
            i += 1
            yield i

    with pytest.raises(Cancelled):
        for i in Watched(endless, cancel=cancel):
            if i == 5:
                cancel.set()
