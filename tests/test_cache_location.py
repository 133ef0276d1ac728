"""One cache location by default for the dashboard, the CLI and the API (issue 16, defect 4): `cache_dir` was the
relative folder `cache`, so a terminal's analyses (run from wherever the user stood) never reached the Library
(the dashboard runs from the repository's folder). Now the default is the user's data folder, the same from any
working folder, and Home and `vlscope info` say where it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).parents[1]
VLSCOPE = str(Path(sys.executable).parent / "vlscope")


@pytest.fixture
def user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A user with their own home and data folder, no cache folder configured, no model."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLSCOPE_")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               VLSCOPE_MODEL=str(tmp_path / "no-model"))
    for name in [k for k in os.environ if k.startswith("VLSCOPE_")]:
        monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _info(env: dict[str, str], cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    out = subprocess.run([VLSCOPE, "info", *extra], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out


def test_the_cli_from_another_folder_and_the_dashboard_use_the_same_cache(user_env: dict[str, str], tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "projects" / "talks"
    elsewhere.mkdir(parents=True)
    expected = Path(user_env["XDG_DATA_HOME"]) / "vlscope" / "cache"

    cli = json.loads(_info(user_env, elsewhere, "--json").stdout)
    assert cli["cache"]["directory"] == str(expected)
    assert cli["cache_dir"] == str(expected)
    assert not (elsewhere / "cache").exists(), "the CLI made a cache folder where it was run"
    text = _info(user_env, elsewhere).stdout
    assert f"Cache: {expected}, the one folder of the dashboard, the vlscope commands and the API" in text

    # the dashboard runs from the repository's folder: the same folder, and Home says which
    monkeypatch.chdir(ROOT)
    import streamlit as st

    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        from ui.state import get_settings

        assert get_settings().cache_dir == expected
        assert [c.value for c in at.code] == [str(expected)]
        assert any("The one folder of the dashboard, the vlscope commands and the API" in c.value for c in at.caption)
    finally:
        st.cache_resource.clear()


def test_a_result_stored_by_the_cli_elsewhere_is_counted_on_home(user_env: dict[str, str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """What a terminal stores (here: the OCR of an image, run from another folder) is what Home counts."""
    from tests.pages.media import text_image

    elsewhere = tmp_path / "scans"
    elsewhere.mkdir()
    (elsewhere / "note.png").write_bytes(text_image(["Meeting notes 2025"]))
    out = subprocess.run([VLSCOPE, "ocr", "note.png"], cwd=elsewhere, env=user_env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Meeting notes 2025" in out.stdout
    monkeypatch.chdir(ROOT)
    import streamlit as st

    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Files analysed"] == "1"
    finally:
        st.cache_resource.clear()


def test_a_relative_folder_in_the_settings_file_is_read_from_the_files_folder(tmp_path: Path) -> None:
    from core.settings import load_settings

    conf = tmp_path / "team" / "vlscope.toml"
    conf.parent.mkdir()
    conf.write_text('cache_dir = "shared-cache"\n')
    settings = load_settings(environ={"VLSCOPE_CONFIG": str(conf)})
    assert settings.cache_dir == conf.parent / "shared-cache"


def test_the_dashboard_command_hands_its_folder_and_settings_file_to_the_dashboard(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    """`vlscope dashboard` starts the dashboard from the repository's folder: a relative setting or the
    vlscope.toml found where the command ran must reach it as absolute paths."""
    from core.cli.base import dashboard_environment
    from core.settings import load_settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "vlscope.toml").write_text('cache_dir = "here-cache"\n')
    settings = load_settings(environ={})
    env = dashboard_environment(settings, environ={})
    assert env == {"VLSCOPE_CACHE_DIR": str(tmp_path / "here-cache"), "VLSCOPE_CONFIG": str(tmp_path / "vlscope.toml")}
    # read again from the repository's folder with those variables: the same folder
    monkeypatch.chdir(ROOT)
    assert load_settings(environ=env).cache_dir == tmp_path / "here-cache"


def test_the_default_follows_the_xdg_rules() -> None:
    from core.settings import default_cache_dir

    assert default_cache_dir({"XDG_DATA_HOME": "/srv/data"}) == Path("/srv/data/vlscope/cache")
    # unset or relative: ~/.local/share, as the XDG base directory specification says
    assert default_cache_dir({}) == Path.home() / ".local" / "share" / "vlscope" / "cache"
    assert default_cache_dir({"XDG_DATA_HOME": "data"}) == Path.home() / ".local" / "share" / "vlscope" / "cache"
