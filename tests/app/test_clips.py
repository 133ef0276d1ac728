"""The clips service (core/app/clips.py) and `vlscope video clip`, on a real video made by ffmpeg: files in the
cache folder's clips folder, made once and reused, times parsed as users write them, clear refusals."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from core.app import Runtime
from core.app.clips import ClipService, Stretch, api_clip, parse_stretches, parse_time
from core.cache import ResultCache, hash_file
from core.errors import UserError
from core.events import Event
from core.jobs import JobRegistry
from core.settings import Settings
from tests.media.test_clips import decoded, make_counter_video


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_counter_video(tmp_path_factory.mktemp("clip-video") / "talk.mp4")


@pytest.fixture()
def runtime(tmp_path: Path):
    rt = Runtime(Settings(cache_dir=tmp_path / "cache"), cache=ResultCache(tmp_path / "cache"), jobs=JobRegistry())
    yield rt
    rt.cache.close()
    rt.close()


def test_times_as_users_write_them() -> None:
    assert parse_time("3:15") == 195 and parse_time("1:02:03.5") == 3723.5 and parse_time("195.5") == 195.5
    assert parse_time(" 3m15s ") == 195 and parse_time("90 s") == 90 and parse_time("3分15秒") == 195
    for bad in ("3:7x", "soon", "", "nan", "3:15 and more"):
        with pytest.raises(UserError, match="is not a time. Write it as 3:15, 1:02:03 or 195.5"):
            parse_time(bad)
    got = parse_stretches("0:10-0:20, 1:00 - 1:05; 90 to 95.5,2:00–2:10")
    assert [(s.start, s.end) for s in got] == [(10, 20), (60, 65), (90, 95.5), (120, 130)]
    with pytest.raises(UserError, match=r"Stretch 2 \('1:00'\) is not a start and an end"):
        parse_stretches("0:10-0:20, 1:00")
    with pytest.raises(UserError, match=r"Stretch 1 \('0:1x-0:20'\): '0:1x' is not a time"):
        parse_stretches("0:1x-0:20")
    with pytest.raises(UserError, match="No stretch was given"):
        parse_stretches(" , ")


def test_stretches_from_events_answers_and_chapters() -> None:
    assert Stretch.of(Event("scene", 3.0, 7.5, "shot 2")) == Stretch(3.0, 7.5, "shot 2")
    assert Stretch.of(Event("answer", 8.0, 8.0, "the dog jumps"), duration=10.0) == Stretch(3.0, 10.0, "the dog jumps")
    assert Stretch.of(Event("answer", 2.0, 2.0)) == Stretch(0.0, 7.0)  # a moment: the seconds around it
    assert Stretch.of({"start": 1, "end": 2, "title": "Intro"}) == Stretch(1.0, 2.0, "Intro")
    from core.analysis.chapters import Chapter

    assert Stretch.of(Chapter(60.0, 95.0, "The demo", "…")) == Stretch(60.0, 95.0, "The demo")
    assert Stretch.of((195, 220)).describe() == "3:15.0 – 3:40.0"


def test_clip_goes_to_the_clips_folder_and_is_made_once(runtime: Runtime, video: Path, monkeypatch) -> None:
    service = ClipService(runtime)
    sha = hash_file(video)
    made = service.clip(video, Stretch(3.3, 5.7, "HELLO"), input_hash=sha, name="My talk.mp4")
    assert Path(made.path).parent == Path(runtime.settings.cache_dir) / "clips"
    assert made.name == "My-talk-0m03.3s-0m05.7s.mp4" and made.media_type == "video/mp4"
    assert made.method == "re-encode" and made.duration == pytest.approx(2.4, abs=0.1) and not made.reused
    assert made.size_bytes == Path(made.path).stat().st_size > 0
    assert made.summary().startswith("Clip: 0:03.3 – 0:05.7, 2.4 s, re-encoded (")
    assert decoded(made.path)[0][1] == 82
    record = json.loads(Path(made.path + ".json").read_text())
    assert record["method"] == "re-encode" and record["start"] == 3.3

    import core.app.clips as clips

    monkeypatch.setattr(clips, "export_clip", lambda *a, **k: pytest.fail("made twice"))
    again = service.clip(video, (3.3, 5.7), input_hash=sha)
    assert again.reused and again.path == made.path and again.duration == made.duration

    monkeypatch.undo()
    copied = service.clip(video, (4.0, 6.0), input_hash=sha)
    assert copied.method == "copy" and copied.start == 4.0 and "key frame" in copied.reason


def test_sheet_and_highlights(runtime: Runtime, video: Path) -> None:
    from PIL import Image

    service = ClipService(runtime)
    sheet = service.sheet(video, Event("text", 3.3, 5.7, "HELLO 42"), name="talk.mp4", tiles=8, columns=4)
    assert sheet.kind == "sheet" and sheet.media_type == "image/jpeg" and sheet.name == "talk-0m03.3s-0m05.7s-sheet.jpg"
    assert len(sheet.detail["times"]) == 8 and sheet.summary().startswith("Contact sheet: 8 frames of 0:03.3 – 0:05.7")
    with Image.open(sheet.path) as img:
        assert img.format == "JPEG" and img.size == (sheet.detail["width"], sheet.detail["height"])
    hl = service.highlights(video, [Event("scene", 1.0, 2.5, "one"), (9.0, 10.0, "two")], name="talk.mp4")
    assert hl.kind == "highlights" and hl.duration == pytest.approx(2.5, abs=0.1)
    assert hl.label == "one; two" and hl.name == "talk-highlights-2.mp4"
    assert hl.summary().startswith("Highlights: 2 stretches joined, 2.5 s, re-encoded")
    assert [s["at"] for s in hl.detail["segments"]] == [0.0, 1.5]


def test_a_stored_upload_by_its_hash(runtime: Runtime, video: Path) -> None:
    from core.files.store import store_upload

    with open(video, "rb") as f:
        stored = store_upload(f, "talk.mp4", runtime.settings.cache_dir, max_bytes=10**9)
    service = ClipService(runtime)
    assert service.source(stored.sha256) == Path(stored.path)
    made = service.clip(stored.sha256, (6.0, 7.0), input_hash=stored.sha256, name=stored.name)
    assert made.method == "copy" and decoded(made.path)[0][1] == 150 and made.name.startswith("talk-")
    with pytest.raises(UserError, match="No stored video has this content hash"):
        service.source("0" * 64)
    with pytest.raises(UserError, match="nothing.mp4 is not a file that exists here"):
        service.source(Path(runtime.settings.cache_dir) / "nothing.mp4")


def test_bad_stretches_are_refused_with_the_fix(runtime: Runtime, video: Path) -> None:
    service = ClipService(runtime)
    with pytest.raises(UserError, match=r"ends at 0:12.0, after the end of the video \(0:10.0\)"):
        service.clip(video, (8.0, 12.0))
    with pytest.raises(UserError, match="before or when it starts"):
        service.sheet(video, (5.0, 4.0))
    with pytest.raises(UserError, match="Unknown clip method 'smart'"):
        service.clip(video, (1.0, 2.0), mode="smart")
    with pytest.raises(UserError, match="No stretch was chosen"):
        service.highlights(video, [])
    assert not [p for p in service.folder().iterdir() if not p.name.endswith(".json")]


def test_old_clips_leave_first_within_the_size_limit(runtime: Runtime, video: Path) -> None:
    import os

    service = ClipService(runtime)
    a = service.clip(video, (1.0, 2.0), mode="re-encode")
    b = service.clip(video, (2.0, 3.0), mode="re-encode")
    old = time.time() - 3600
    os.utime(a.path, (old, old))  # `a` was last used an hour ago; `b` just now
    removed = service.evict(limit_bytes=b.size_bytes)
    assert removed == [Path(a.path)] and not Path(a.path + ".json").exists() and Path(b.path).exists()
    with pytest.raises(UserError, match="no longer on the server"):
        a.read_bytes()
    assert service.clip(video, (1.0, 2.0), mode="re-encode").reused is False  # made again when asked again


def test_the_api_entry(runtime: Runtime, video: Path) -> None:
    sha = hash_file(video)
    clip = api_clip(runtime, video, sha, "talk.mp4", start="0:04", end="0:06.5")
    assert clip.method == "copy" and clip.headers()["X-VLScope-Method"] == "copy"
    assert clip.headers()["X-VLScope-Start"] == "4.000"
    sheet = api_clip(runtime, video, sha, "talk.mp4", start="3.3", end="5.7", output="sheet", tiles=4)
    assert sheet.media_type == "image/jpeg" and len(sheet.detail["times"]) == 4
    hl = api_clip(runtime, video, sha, "talk.mp4", highlights="0:01-0:02,0:05-0:06")
    assert hl.kind == "highlights" and hl.duration == pytest.approx(2.0, abs=0.1)
    with pytest.raises(UserError, match="A clip needs a start and an end"):
        api_clip(runtime, video, sha, "talk.mp4", start="0:04")


# ------------------------------------------------------------------------------------------------ the CLI

def _cli(argv: list[str]) -> int:
    from core.cli.errors import run_command
    from core.cli.video_clip import register_video

    parser = argparse.ArgumentParser(prog="vlscope")
    video = parser.add_subparsers(dest="command").add_parser("video")
    register_video(video.add_subparsers(dest="video_command"))
    args = parser.parse_args(["video", *argv])
    return run_command(args.func, args)


@pytest.fixture()
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VLSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VLSCOPE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_clip_and_sheet(cli_env: Path, video: Path, capsys) -> None:
    assert _cli(["clip", str(video), "--start", "0:03.3", "--end", "0:05.7", "--sheet", "sheet.jpg"]) == 0
    out = capsys.readouterr().out
    assert "talk-0m03.3s-0m05.7s.mp4: Clip: 0:03.3 – 0:05.7, 2.4 s, re-encoded" in out
    assert "sheet.jpg: Contact sheet: 12 frames of 0:03.3 – 0:05.7" in out
    assert "frames at 3.28, 3.48," in out
    assert decoded(cli_env / "talk-0m03.3s-0m05.7s.mp4")[0][1] == 82 and (cli_env / "sheet.jpg").stat().st_size > 0
    assert list((cli_env / "cache" / "clips").glob("*.mp4"))  # the dashboard finds the same file

    assert _cli(["clip", str(video), "--start", "4", "--end", "6", "--out", "c.mp4", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)
    assert item["method"] == "copy" and item["written_to"] == "c.mp4" and decoded(cli_env / "c.mp4")[0][1] == 100


def test_cli_highlights(cli_env: Path, video: Path, capsys) -> None:
    assert _cli(["clip", str(video), "--highlights", "0:01-0:02.5, 6.3-7.1, 0:09 to 0:10"]) == 0
    out = capsys.readouterr().out
    assert "talk-highlights-3.mp4: Highlights: 3 stretches joined, 3.3 s" in out
    assert "6.300 -     7.100 s of the video at 1.500 s of the file" in out


@pytest.mark.parametrize("argv,message", [
    (["--start", "0:09", "--end", "0:12"], "error: The stretch ends at 0:12.0, after the end of the video (0:10.0)"),
    (["--start", "5", "--end", "4"], "error: The stretch ends (0:04.0) before or when it starts (0:05.0)"),
    (["--start", "3:7x", "--end", "4"], "error: '3:7x' is not a time. Write it as 3:15"),
    (["--start", "1"], "error: give --start and --end (e.g. --start 3:15 --end 3:40), or --highlights"),
    (["--start", "1", "--end", "2", "--highlights", "0:01-0:02"], "error: give either --start and --end"),
    (["--start", "1", "--end", "2", "--out", "nowhere/x.mp4"], "error: the folder nowhere does not exist"),
    (["--start", "1", "--end", "2", "--out", "x.avi"], "error: the clip 'x.avi' needs one of the file types .mp4"),
])
def test_cli_refusals(cli_env: Path, video: Path, capsys, argv: list[str], message: str) -> None:
    assert _cli(["clip", str(video), *argv]) == 1
    assert capsys.readouterr().err.startswith(message)
    assert not list(cli_env.glob("*.mp4"))


def test_cli_keeps_an_existing_file_unless_forced(cli_env: Path, video: Path, capsys) -> None:
    (cli_env / "c.mp4").write_bytes(b"mine")
    assert _cli(["clip", str(video), "--start", "4", "--end", "5", "--out", "c.mp4"]) == 1
    assert "c.mp4 already exists; give --force to replace it" in capsys.readouterr().err
    assert (cli_env / "c.mp4").read_bytes() == b"mine"
    assert _cli(["clip", str(video), "--start", "4", "--end", "5", "--out", "c.mp4", "--force"]) == 0
    assert decoded(cli_env / "c.mp4")[0][1] == 100
