"""AppTest fixtures: an empty cache and no model (the pages must work without one), a made video and image."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.pages.media import make_video

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="session")
def video_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_video(tmp_path_factory.mktemp("video") / "cuts.mp4").read_bytes()


def page(name: str) -> str:
    return str(ROOT / "pages" / f"{name}.py")


def wait_job(prefix: str, timeout: float = 60) -> None:
    """Wait until every job whose key starts with `prefix` has ended."""
    from core.jobs import registry

    deadline = time.monotonic() + timeout
    for job in registry().jobs(prefix):
        assert job.wait(max(0.1, deadline - time.monotonic())), f"job {job.key} still running"


@pytest.fixture
def media_files(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Every file the pages hand to Streamlit's media store (downloads), by file id."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stored: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        if isinstance(path_or_data, bytes):
            stored[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", load_and_get_id)
    return stored


def download_bytes(at, media: dict[str, bytes], key: str) -> bytes:
    """The bytes behind the download button whose key ends with `key`."""
    button = next(b for b in at.get("download_button") if b.proto.id.endswith(key))
    name = button.proto.url.rsplit("/", 1)[1]
    return next(data for file_id, data in media.items() if name.startswith(file_id))
