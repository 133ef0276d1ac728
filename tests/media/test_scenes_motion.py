"""Scene cuts (hard cuts, fades through black) and motion on videos with known times."""

from __future__ import annotations

from core.media import probe_video
from core.media.framepass import run_frame_pass
from core.media.motion import MotionParams

FRAME = 1 / 25


def test_hard_cuts_land_within_two_frames(cuts_video):
    info = probe_video(cuts_video)
    result = run_frame_pass(info, motion=False).scenes
    assert [round(s.start, 3) for s in result.shots][0] == 0.0
    assert len(result.shots) == 3
    for found, truth in zip(result.cuts, [2.0, 4.0]):
        assert abs(found - truth) <= 2 * FRAME
    assert [s.transition_in for s in result.shots] == ["start", "cut", "cut"]
    assert abs(result.shots[-1].end - 6.0) <= FRAME
    assert not result.fades


def test_fade_through_black_is_one_boundary_inside_the_black_gap(fades_video):
    info = probe_video(fades_video)
    result = run_frame_pass(info, motion=False).scenes
    assert len(result.shots) == 2, result.shots
    boundary = result.shots[1].start
    assert 2.3 <= boundary <= 3.3  # inside the fade/black stretch (fade out 2.0-2.6, black 2.6-3.0, fade in 3.0-3.6)
    assert result.shots[0].transition_out == "fade" and result.shots[1].transition_in == "fade"
    assert result.cuts == []  # the fade is not mistaken for hard cuts
    kinds = {f.kind for f in result.fades}
    assert {"out", "in", "black"} <= kinds
    out = next(f for f in result.fades if f.kind == "out")
    fin = next(f for f in result.fades if f.kind == "in")
    assert 1.8 <= out.start <= 2.3 and fin.end >= 3.3
    events = result.events()
    assert [e.kind for e in events].count("scene") == 2


def test_motion_events_and_static_stretches(motion_video):
    info = probe_video(motion_video)
    result = run_frame_pass(info, scenes=False).motion
    acts = result.activity
    assert len(acts) == 2, acts
    assert abs(acts[0]["start"] - 2.0) <= 0.3 and abs(acts[0]["end"] - 4.0) <= 0.3
    assert abs(acts[1]["start"] - 6.0) <= 0.3 and abs(acts[1]["end"] - 7.0) <= 0.3
    assert 2.0 <= acts[0]["peak_time"] <= 4.0
    assert len(result.curve) == 8 and result.curve[3] > result.threshold > result.curve[0]
    # static: before 2 s, 4-6 s (2 s long); after 7 s is 1 s (under min_static 1.5 s)
    assert any(s["start"] <= 0.1 and abs(s["end"] - 2.0) <= 0.3 for s in result.static)
    assert any(abs(s["start"] - 4.0) <= 0.3 and abs(s["end"] - 6.0) <= 0.3 for s in result.static)
    # a very insensitive setting finds nothing
    quiet = run_frame_pass(info, scenes=False, motion_params=MotionParams(sensitivity=0.0, pixel_delta=250)).motion
    assert quiet.activity == []
