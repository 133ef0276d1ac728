"""POST /video/clip on a real server: a stretch of an uploaded video comes back as a video file (its stretch and
method in the headers), a contact sheet as a JPEG, and a bad stretch as a 400 naming the cause."""

from __future__ import annotations

import io

import av
import httpx as httpx2
from PIL import Image


def test_a_stretch_comes_back_as_a_clip_and_a_sheet(live_url, cuts_video):
    data = cuts_video.read_bytes()
    r = httpx2.post(f"{live_url}/video/clip", files={"file": ("cuts.mp4", data, "video/mp4")},
                    params={"start": "0:02", "end": "0:04"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["X-VLScope-Method"] in ("copy", "re-encode")
    assert abs(float(r.headers["X-VLScope-Start"]) - 2.0) < 0.05 and abs(float(r.headers["X-VLScope-End"]) - 4.0) < 0.1
    with av.open(io.BytesIO(r.content)) as clip:
        assert abs(float(clip.duration) / 1e6 - 2.0) < 0.15
    sheet = httpx2.post(f"{live_url}/video/clip", files={"file": ("cuts.mp4", data, "video/mp4")},
                        params={"start": "0:00", "end": "0:06", "output": "sheet", "tiles": 4}, timeout=120)
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(sheet.content)).format == "JPEG"
    bad = httpx2.post(f"{live_url}/video/clip", files={"file": ("cuts.mp4", data, "video/mp4")},
                      params={"start": "0:05", "end": "0:03"}, timeout=60)
    assert bad.status_code == 400 and "cuts.mp4" in bad.json()["detail"]
