"""The staged pipeline with its cache, the Event model, and the `vlscope video` commands."""

from __future__ import annotations

import json
import threading

import pytest

from core.events import Event, events_from_json, events_to_json
from core.analysis.video_pipeline import analyze_video
from core.cache import ResultCache
from core.media import Cancelled


def test_event_json_round_trip():
    e = Event("text", 1.5, 3.0, "HELLO", {"box": [[1, 2]]}, confidence=0.9, source="media.text", thumbnail="k")
    assert Event.from_json(e.to_json()) == e
    assert events_from_json(json.loads(json.dumps(events_to_json([e])))) == [e]
    with pytest.raises(ValueError):
        Event("scene", 3, 1)


def test_pipeline_caches_each_stage(tmp_path, cuts_video):
    stages_seen: list[str] = []
    with ResultCache(tmp_path / "cache") as cache:
        first = analyze_video(cuts_video, stages=("scenes", "motion"), cache=cache,
                              progress=lambda f, m="", s="": stages_seen.append(s))
        assert first.from_cache == {"probe": False, "scenes": False, "motion": False}
        assert len([e for e in first.events if e.kind == "scene"]) == 3
        again = analyze_video(cuts_video, stages=("scenes", "motion"), cache=cache)
        assert again.from_cache == {"probe": True, "scenes": True, "motion": True}
        assert again.seconds < first.seconds and again.events == first.events
        assert len(cache.entries(first.input_hash)) == 3
    assert {"probe", "scenes", "motion"} <= set(stages_seen)
    restored = type(first).from_dict(json.loads(json.dumps(first.to_dict())))
    assert restored.events == first.events and restored.scenes().shots == first.scenes().shots


def test_pipeline_cancel(tmp_path, cuts_video):
    cancel = threading.Event()
    cancel.set()
    with ResultCache(tmp_path / "cache") as cache, pytest.raises(Cancelled):
        analyze_video(cuts_video, stages=("scenes",), cache=cache, cancel=cancel)


def test_cli_probe_plan_analyze(tmp_path, monkeypatch, capsys, cuts_video):
    from core.cli import main

    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["video", "probe", str(cuts_video), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frame_count"] == 150
    assert main(["video", "plan", str(cuts_video), "--fps", "1", "--model", "2b", "--gpu-memory-gb", "24"]) == 0
    out = capsys.readouterr().out
    assert "frames kept:  6" in out and "fits:         yes" in out
    assert main(["video", "analyze", str(cuts_video), "--stages", "scenes,motion", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) >= {"probe", "plan", "events"}
    scenes = [e for e in data["events"] if e["kind"] == "scene"]
    assert len(scenes) == 3 and abs(scenes[1]["start"] - 2.0) <= 0.08
    assert set(scenes[0]) >= {"kind", "start", "end", "label", "confidence"}


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from core.cli import main

    bad = tmp_path / "bad.mp4"
    bad.write_text("hello")
    assert main(["video", "probe", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert main(["video", "analyze", str(bad), "--stages", "nope"]) == 1


def test_video_group_accepts_new_subcommands():
    import argparse

    from core.cli import video

    parser = argparse.ArgumentParser()
    video.register(parser.add_subparsers())
    p = video.add_video_command("example-sub", "an example subcommand")
    p.set_defaults(func=lambda a: 0)
    args = parser.parse_args(["video", "example-sub", "x.mp4"])
    assert args.file == "x.mp4" and args.func(args) == 0
