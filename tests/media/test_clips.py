"""Clips, contact sheets and highlights of real videos made by ffmpeg: a key frame every 2 s, B-frames, each
frame's number burnt in as ten black/white stripes (readable exactly after compression) with its time written
by drawtext, and a 440 Hz tone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.media.clips import ClipError, contact_sheet, export_clip, export_highlights, keyframes_around
from core.media.probe import probe_video

FPS = 25
GOP_S = 2.0
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def make_counter_video(path: Path, seconds: int = 10, audio: str | None = "aac", container_args: tuple[str, ...] = (),
                       gop: int = 50) -> Path:
    """`seconds` s at 25 fps, 320x180: frame N shows N in binary as ten stripes across the top (stripe i white when
    bit i is set) and its time and number written below; a key frame every `gop` frames (x264 veryfast: B-frames)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs the ffmpeg program (apt-get install ffmpeg)")
    text = f":fontfile={FONT}" if Path(FONT).exists() else ""
    video = (f"color=c=black:s=320x180:r={FPS}:d={seconds},format=yuv420p,"
             "geq=lum='if(lt(Y,90),if(bitand(N,pow(2,floor(X/32))),235,16),60)':cb=128:cr=128,"
             f"drawtext=text='%{{pts\\:hms}} f%{{frame_num}}':x=10:y=120:fontsize=24:fontcolor=white{text}")
    args = [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", video]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", audio, "-shortest"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
             *container_args, str(path)]
    subprocess.run(args, check=True)
    return path


def frame_number(rgb_or_gray: np.ndarray) -> int:
    """The number burnt into a frame (any size: the stripes are read at their relative positions)."""
    img = rgb_or_gray if rgb_or_gray.ndim == 2 else rgb_or_gray.mean(axis=2)
    h, w = img.shape
    band = img[int(h * 0.06):int(h * 0.44)]
    n = 0
    for i in range(10):
        x0, x1 = int(w * (i * 32 + 6) / 320), int(w * (i * 32 + 26) / 320)
        if band[:, x0:x1].mean() > 128:
            n |= 1 << i
    return n


def decoded(path: str | Path) -> list[tuple[float, int]]:
    """(time s, burnt-in number) of every frame of a file, in order."""
    import av

    with av.open(str(path)) as c:
        return [(float(f.time), frame_number(f.to_ndarray(format="gray"))) for f in c.decode(video=0)]


def audio_seconds(path: str | Path) -> float:
    import av

    with av.open(str(path)) as c:
        return sum(f.samples / f.sample_rate for f in c.decode(audio=0))


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_counter_video(tmp_path_factory.mktemp("clips") / "counter.mp4")


def test_the_made_video_reads_back(counter: Path) -> None:
    frames = decoded(counter)
    assert len(frames) == 250
    assert [n for _, n in frames[:3]] == [0, 1, 2] and frames[82][1] == 82 and frames[-1][1] == 249
    info = probe_video(counter)
    assert info.keyframe_interval == pytest.approx(GOP_S)
    assert keyframes_around(counter, 3.3, info) == (2.0, 4.0)
    assert keyframes_around(counter, 4.0, info) == (4.0, 6.0)


def test_copy_when_the_start_is_a_key_frame(counter: Path, tmp_path: Path) -> None:
    r = export_clip(counter, tmp_path / "c.mp4", 4.0, 6.5)
    assert r.method == "copy" and r.keyframe == 4.0
    assert "starts on a key frame" in r.reason
    frames = decoded(r.path)
    assert frames[0][1] == 100  # the frame at 4.0 s
    # copy: exact start, end within a GOP (here within the B-frames the last shown frames refer to)
    assert abs(r.duration - 2.5) <= GOP_S and abs(r.duration - 2.5) <= 0.2
    assert r.start == 4.0 and r.end == pytest.approx(4.0 + r.duration)
    assert r.has_audio and audio_seconds(r.path) == pytest.approx(2.5, abs=0.1)
    assert [n for _, n in frames] == list(range(100, 100 + len(frames)))  # nothing missing or doubled


def test_copy_from_a_key_frame_within_the_tolerance(counter: Path, tmp_path: Path) -> None:
    r = export_clip(counter, tmp_path / "c.mp4", 4.1, 6.0)
    assert r.method == "copy" and r.start == 4.0
    assert "0.10 s after a key frame" in r.reason
    assert decoded(r.path)[0][1] == 100


def test_reencode_starts_on_the_frame_shown_at_start(counter: Path, tmp_path: Path) -> None:
    r = export_clip(counter, tmp_path / "r.mp4", 3.3, 5.7)
    assert r.method == "re-encode" and r.keyframe is None
    assert "nearest key frame is at 0:02.0" in r.reason
    assert r.duration == pytest.approx(2.4, abs=0.1)
    frames = decoded(r.path)
    assert frames[0] == (0.0, 82)  # 3.3 s shows frame 82 (3.28 to 3.32 s)
    assert frames[-1][1] == 142  # the last frame before 5.7 s
    assert [n for _, n in frames] == list(range(82, 143))
    assert audio_seconds(r.path) == pytest.approx(2.4, abs=0.05)


def test_reencode_asked_for_on_a_key_frame(counter: Path, tmp_path: Path) -> None:
    r = export_clip(counter, tmp_path / "r.mp4", 6.0, 7.0, mode="re-encode")
    assert r.method == "re-encode" and r.duration == pytest.approx(1.0, abs=0.1)
    assert decoded(r.path)[0][1] == 150


def test_forced_copy_starts_at_the_key_frame_before(counter: Path, tmp_path: Path) -> None:
    r = export_clip(counter, tmp_path / "c.mp4", 3.3, 5.7, mode="copy")
    assert r.method == "copy" and r.keyframe == 2.0 and r.start == 2.0
    assert "1.30 s before the start" in r.reason
    assert decoded(r.path)[0][1] == 50
    assert 0 <= r.duration - 2.4 <= GOP_S + 0.2  # within a GOP of the stretch asked for


def test_highlights_last_the_sum_of_their_stretches(counter: Path, tmp_path: Path) -> None:
    stretches = [(1.0, 2.5), (6.3, 7.1), (9.0, 10.0)]
    r = export_highlights(counter, tmp_path / "h.mp4", stretches)
    assert r.method == "re-encode"
    assert r.duration == pytest.approx(3.3, abs=0.1)
    assert [s["at"] for s in r.segments] == pytest.approx([0.0, 1.5, 2.3])
    frames = decoded(r.path)
    times = [t for t, _ in frames]
    assert all(0 < b - a <= 1.0 / FPS + 1e-3 for a, b in zip(times, times[1:]))  # continuous: no gap, no overlap
    starts = {round(t, 2): n for t, n in frames}
    assert starts[0.0] == 25 and starts[1.5] == 157 and starts[2.3] == 225  # each stretch's first frame
    assert frames[-1][1] == 249
    assert audio_seconds(r.path) == pytest.approx(3.3, abs=0.05)


def test_contact_sheet_has_n_tiles_with_their_frames_and_times(counter: Path, tmp_path: Path) -> None:
    from PIL import Image

    from core.ocr.engines import TesseractEngine

    s = contact_sheet(counter, tmp_path / "s.png", 3.3, 5.7, tiles=6, columns=3, tile_width=320)
    assert s.tiles == 6 and (s.columns, s.rows) == (3, 2)
    assert s.times == pytest.approx([3.28, 3.68, 4.08, 4.48, 4.88, 5.28])
    img = np.asarray(Image.open(s.path).convert("RGB"))
    assert img.shape[:2] == (s.height, s.width)
    pad, label_h = 8, 26  # as laid out for 320-pixel tiles
    numbers, labels = [], []
    engine = TesseractEngine()
    for i in range(6):
        r, c = divmod(i, 3)
        x, y = pad + c * (320 + pad), pad + r * (180 + label_h + pad)
        numbers.append(frame_number(img[y:y + 180, x:x + 320]))
        strip = 255 - img[y + 180:y + 180 + label_h, x:x + 160].mean(axis=2).astype(np.uint8)
        big = np.kron(strip, np.ones((3, 3), dtype=np.uint8))
        if engine.available():
            labels.append(" ".join(ln.text for ln in engine.read(np.stack([big] * 3, axis=2), psm="7").lines))
    assert numbers == [82, 92, 102, 112, 122, 132]
    if engine.available():
        assert labels == ["0:03.3", "0:03.7", "0:04.1", "0:04.5", "0:04.9", "0:05.3"]


def test_contact_sheet_of_a_short_stretch_has_one_tile_per_frame(counter: Path, tmp_path: Path) -> None:
    s = contact_sheet(counter, tmp_path / "s.jpg", 2.0, 2.2, tiles=12)
    assert s.tiles == 5 and s.times == pytest.approx([2.0, 2.04, 2.08, 2.12, 2.16])


def test_a_transport_stream_with_a_late_start(tmp_path: Path) -> None:
    """MPEG-TS starts at 1.48 s and its seeks land past the key frame asked for: clips still start right."""
    ts = make_counter_video(tmp_path / "in.ts", audio="mp2")
    assert probe_video(ts).start_time > 1.0
    copy = export_clip(ts, tmp_path / "c.mkv", 4.0, 6.5)
    assert copy.method == "copy" and decoded(copy.path)[0][1] == 100
    mp4 = export_clip(ts, tmp_path / "c.mp4", 4.0, 6.5)
    assert mp4.method == "re-encode" and "mp2 sound" in mp4.reason  # MP2 in MP4 would not play in browsers
    assert decoded(mp4.path)[0][1] == 100 and mp4.duration == pytest.approx(2.5, abs=0.1)
    r = export_clip(ts, tmp_path / "r.mkv", 3.3, 5.7)
    assert r.method == "re-encode" and [n for _, n in decoded(r.path)][:2] == [82, 83]
    assert r.duration == pytest.approx(2.4, abs=0.1)


def test_a_video_without_sound(tmp_path: Path) -> None:
    silent = make_counter_video(tmp_path / "silent.mp4", seconds=6, audio=None)
    for start in (2.0, 2.5):
        r = export_clip(silent, tmp_path / f"s{start}.mp4", start, 4.0)
        assert not r.has_audio and decoded(r.path)[0][1] == int(start * FPS)
    h = export_highlights(silent, tmp_path / "h.mp4", [(0.5, 1.0), (3.0, 4.0)])
    assert not h.has_audio and h.duration == pytest.approx(1.5, abs=0.1)


@pytest.mark.parametrize("start,end,words", [
    (5.0, 4.0, "ends (0:04.0) before or when it starts (0:05.0)"),
    (4.0, 4.0, "before or when it starts"),
    (12.0, 13.0, "starts at 0:12.0, after the end of the video (0:10.0)"),
    (8.0, 11.0, "ends at 0:11.0, after the end of the video (0:10.0). Give an end at or before 0:10.0"),
    (-1.0, 2.0, "starts before the video does"),
])
def test_stretches_that_cannot_be_cut(counter: Path, tmp_path: Path, start: float, end: float, words: str) -> None:
    for call in (lambda: export_clip(counter, tmp_path / "x.mp4", start, end),
                 lambda: contact_sheet(counter, tmp_path / "x.jpg", start, end)):
        with pytest.raises(ClipError) as caught:
            call()
        assert words in str(caught.value)
    with pytest.raises(ClipError, match="Stretch 2: "):
        export_highlights(counter, tmp_path / "h.mp4", [(0.0, 1.0), (start, end)])
    assert not list(tmp_path.iterdir())  # nothing written, no temporary file left


def test_outputs_that_cannot_be_written(counter: Path, tmp_path: Path) -> None:
    with pytest.raises(ClipError, match="folder .* does not exist"):
        export_clip(counter, tmp_path / "missing" / "x.mp4", 1.0, 2.0)
    with pytest.raises(ClipError, match="is a folder"):
        export_clip(counter, tmp_path, 1.0, 2.0)
    with pytest.raises(ClipError, match=r"file type \.avi is not one of \.m4v, \.mkv, \.mov, \.mp4"):
        export_clip(counter, tmp_path / "y.avi", 1.0, 2.0)
    with pytest.raises(ClipError, match="would overwrite the video it is cut from"):
        export_clip(counter, counter, 1.0, 2.0)
    with pytest.raises(ClipError, match=r"file type \.gif"):
        contact_sheet(counter, tmp_path / "s.gif", 1.0, 2.0)
    for mode in ("re-encode", "copy"):
        with pytest.raises(ClipError, match="cannot be written to /proc/clip.mp4"):  # no new files, even from root
            export_clip(counter, "/proc/clip.mp4", 1.0, 2.0, mode=mode)
    with pytest.raises(ClipError, match="Unknown clip method"):
        export_clip(counter, tmp_path / "x.mp4", 1.0, 2.0, mode="smart")


def test_without_ffmpeg_libraries(counter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # what a missing or broken PyAV install looks like
    with pytest.raises(ClipError, match="need FFmpeg's libraries .*pip install av"):
        export_clip(counter, tmp_path / "x.mp4", 1.0, 2.0)


def test_a_matroska_recording_is_copied_into_mp4(tmp_path: Path) -> None:
    """Matroska leaves out the decoding times of the first reordered frames after a seek; MP4 needs them."""
    mkv = make_counter_video(tmp_path / "rec.mkv", seconds=8, audio="libopus")
    for start, first in ((0.0, 0), (4.0, 100), (4.1, 100)):
        r = export_clip(mkv, tmp_path / f"c{start}.mp4", start, 6.5)
        assert r.method == "copy" and r.has_audio
        frames = decoded(r.path)
        assert frames[0][1] == first and [n for _, n in frames] == list(range(first, first + len(frames)))
    subprocess.run([shutil.which("ffmpeg"), "-v", "error", "-xerror", "-i", str(r.path), "-f", "null", "-"],
                   check=True)  # the copy decodes without a single error


def test_progress_and_cancel(counter: Path, tmp_path: Path) -> None:
    import threading

    from core.media.errors import Cancelled

    seen: list[float] = []
    export_clip(counter, tmp_path / "p.mp4", 1.3, 4.0, progress=lambda f, m="", s="": seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen) and len(seen) > 10
    stop = threading.Event()
    stop.set()
    for call in (lambda: export_clip(counter, tmp_path / "x.mp4", 1.3, 4.0, cancel=stop),
                 lambda: export_highlights(counter, tmp_path / "h.mp4", [(1.0, 2.0)], cancel=stop),
                 lambda: contact_sheet(counter, tmp_path / "s.jpg", 1.0, 2.0, cancel=stop)):
        with pytest.raises(Cancelled):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.mp4"]  # no half-written file left
