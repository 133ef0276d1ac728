"""Issue 12, the dashboard's part, driven headlessly with AppTest.

D8: file names, OCR text and model answers reach Streamlit calls that render Markdown; a name or answer
holding `![x](http://...)` or `<img src=...>` made every viewer's browser fetch a remote URL. Each check
renders the element's body with a CommonMark renderer (Streamlit's own renderer is CommonMark + GFM) and
asserts what a viewer sees: the text as written, no <img>, no HTML.
D2: with a users file configured, nobody reaches a page without signing in; with OIDC configured but not
set up, the page says exactly what to configure.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from tests.dashboard.stubs import AnswerServer
from tests.pages.media import make_video

ROOT = Path(__file__).parents[2]
MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# a file name a browser turns into a request to 127.0.0.1:9 (backslashes read as slashes in http URLs)
EVIL_NAME = "![x](http:\\\\127.0.0.1:9\\pixel.png).mp4"


def rendered(body: str) -> str:
    """The HTML a CommonMark renderer makes of a Markdown body."""
    return MD.render(body)


def shown_text(body: str) -> str:
    """What a viewer reads: the rendered HTML without tags and without zero-width spaces."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", rendered(body))).replace("\u200b", "").strip()


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_video(tmp_path_factory.mktemp("video") / "cuts.mp4").read_bytes()


@pytest.fixture
def answer_server():
    server = AnswerServer()
    yield server
    server.stop()


# ------------------------------------------------------------------------------------------------ D8


def test_break8_plain_and_safe_markdown_show_untrusted_text_as_written() -> None:
    from ui.safe import plain, safe_markdown

    for text in [EVIL_NAME, "![x](http://127.0.0.1:9/pixel.png)", "<img src=http://127.0.0.1:9/pixel.png>",
                 "# big *bold* `code` [link](http://a) :red[x] $x^2$ &lt; 1. item | cell ~~s~~",
                 "\\![x](http://127.0.0.1:9/pixel.png)", "- [x](y)\n\n> quote"]:
        html = rendered(plain(text))
        assert "<img" not in html and "<a " not in html and "<h1" not in html and "<code" not in html, html
        assert shown_text(plain(text)) == " ".join(text.split())
    answer = ("The ball is **red** at 0:02.\n\n- one\n- two\n\n![x](http://127.0.0.1:9/pixel.png) and "
              "<img src=http://127.0.0.1:9/pixel.png> and <http://127.0.0.1:9/pixel.png>\n\n"
              "`a<b` then ```\n```python\nprint('<img>')\n```\n"
              "| a | b |\n|---|---|\n| `x | ![i](http://127.0.0.1:9/pixel.png) ` |\n\n"
              "`x\n` ![i](http://127.0.0.1:9/pixel.png) `")
    html = rendered(safe_markdown(answer))
    assert "<img" not in html and "<http" not in html
    assert "<strong>red</strong>" in html and "<li>one</li>" in html
    assert "<code class=\"language-python\">print('&lt;img&gt;')\n</code>" in html  # fenced code kept exactly
    # an image becomes at most a link (acts only when clicked); the HTML shows as the characters it is
    assert '!\u200b<a href="http://127.0.0.1:9/pixel.png">x</a>' in html
    assert "<img src=http://127.0.0.1:9/pixel.png> and <http://127.0.0.1:9/pixel.png>" in shown_text(
        safe_markdown(answer))


def test_break8_video_page_shows_an_uploaded_file_name_as_text(app_env: Path, video_bytes: bytes) -> None:
    at = AppTest.from_file(str(ROOT / "pages" / "video.py"), default_timeout=60).run()
    at.file_uploader(key="video_upload").set_value((EVIL_NAME, video_bytes, "video/mp4")).run()
    assert not at.exception, at.exception
    caption = next(c.value for c in at.caption if "pixel.png" in c.value)
    assert "<img" not in rendered(caption)
    assert shown_text(caption).startswith(EVIL_NAME + " · 0:06")


def test_break8_streamed_answer_keeps_bold_but_loads_no_image(app_env: Path, video_bytes: bytes,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            answer_server: AnswerServer) -> None:
    answer_server.answer = (f"The ball is **red**. ![x]({answer_server.pixel_url}) "
                            f"<img src=\"{answer_server.pixel_url}\">")
    monkeypatch.setenv("VLSCOPE_ENGINE", "remote")
    monkeypatch.setenv("VLSCOPE_REMOTE_URL", answer_server.api_url)
    monkeypatch.setenv("VLSCOPE_REMOTE_API_KEY", "sk-test")
    at = AppTest.from_file(str(ROOT / "pages" / "video.py"), default_timeout=60).run()
    at.file_uploader(key="video_upload").set_value(("cuts.mp4", video_bytes, "video/mp4")).run()
    at.toggle(key="video_refine").set_value(False).run()
    at.text_input(key="video_question").input("What colour is the ball?").run()
    at.button(key="video_ask").click().run()
    assert not at.exception, at.exception
    assert answer_server.completions == 1
    body = at.chat_message[0].markdown[0].value  # the streamed answer, as the browser gets it
    html = rendered(body)
    assert "<strong>red</strong>" in html and "<img" not in html
    assert f'!\u200b<a href="{answer_server.pixel_url}">x</a>' in html  # at most a link: fetched only if clicked
    assert shown_text(body) == f"The ball is red. !x <img src=\"{answer_server.pixel_url}\">"


def test_break8_library_shows_stored_names_and_ocr_text_as_text(app_env: Path) -> None:
    from core.files import store_upload
    from core.library import record_file
    from core.ocr.pipeline import OcrOptions, run_ocr
    from tests.pages.media import text_image
    from ui.state import get_cache, get_settings

    name = "![x](http://127.0.0.1:9/pixel.png) <img src=x>.png"
    at = AppTest.from_file(str(ROOT / "pages" / "library.py"), default_timeout=60).run()
    cache, settings = get_cache(), get_settings()
    image = store_upload(io.BytesIO(text_image(["Invoice from Acme"])), "acme.png", settings.cache_dir, 10**8)
    record_file(cache, image.sha256, name, image.kind, image.path, image.size_bytes)  # e.g. sent to the API
    run_ocr(image.path, OcrOptions(), name=name, cache=cache)
    at.run()
    at.button(key="lib_item_details_0").click().run()
    assert not at.exception, at.exception
    heading = at.subheader[0].value
    assert "<img" not in rendered(heading) and shown_text(heading) == name
    assert "Acme" in at.code[0].value  # OCR text in a code block: never Markdown


def test_break8_an_error_quoting_a_file_name_is_text(app_env: Path, video_bytes: bytes) -> None:
    at = AppTest.from_file(str(ROOT / "pages" / "video.py"), default_timeout=60).run()
    at.file_uploader(key="video_upload").set_value((EVIL_NAME, b"not a video at all", "video/mp4")).run()
    assert not at.exception, at.exception
    error = next(e.value for e in at.error if "pixel.png" in e.value)
    assert "<img" not in rendered(error) and shown_text(error).startswith(EVIL_NAME + " cannot be used")


# ------------------------------------------------------------------------------------------------ D2


@pytest.fixture
def users_file(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from core.auth import User, hash_password, save_users

    path = app_env / "users.toml"
    save_users(path, {"alice": User("alice", hash_password("correct horse"))})
    monkeypatch.setenv("VLSCOPE_AUTH_FILE", str(path))
    return path


def _home(timeout: float = 60) -> AppTest:
    return AppTest.from_file(str(ROOT / "Home.py"), default_timeout=timeout)


def test_break2_password_sign_in_guards_every_page(users_file: Path, video_bytes: bytes) -> None:
    at = _home().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Sign in to VLScope"
    assert not at.metric  # Home's content is not shown
    at.text_input(key="sign_in_user").input("alice")
    at.text_input(key="sign_in_password").input("wrong")
    t0 = time.monotonic()
    at.button[0].click().run()  # the form's submit button
    assert time.monotonic() - t0 >= 0.5  # a failed attempt is slowed down
    assert [e.value for e in at.error] == ["Wrong user name or password. Try again, or ask whoever runs this "
                                          "dashboard to add you (`vlscope users add NAME`)."]
    assert at.title[0].value == "Sign in to VLScope" and not at.metric

    at.text_input(key="sign_in_user").input("alice")
    at.text_input(key="sign_in_password").input("correct horse")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "VLScope"
    assert {m.label for m in at.metric} >= {"Device", "Model", "Entries"}
    assert any(c.value == "Signed in as **alice**" for c in at.sidebar.caption)
    assert at.session_state["auth_user"] == "alice"

    # a page's run records who is signed in: the results it stores say alice made them
    at.switch_page("pages/video.py").run()
    assert at.title[0].value == "Video Q&A"
    at.file_uploader(key="video_upload").set_value(("cuts.mp4", video_bytes, "video/mp4")).run()
    assert not at.exception, at.exception
    from ui.state import get_cache

    made_by = {e.made_by for e in get_cache().entries()}
    assert made_by == {"alice"}, made_by

    at.switch_page("Home.py").run()
    at.button(key="sign_out").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Sign in to VLScope" and not at.metric
    assert "auth_user" not in at.session_state


def test_break2_a_page_opened_directly_asks_for_sign_in_too(users_file: Path) -> None:
    # what Streamlit does on a server's first run when its URL names a page: the page runs without Home.py
    at = AppTest.from_file(str(ROOT / "pages" / "library.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Sign in to VLScope"]
    at.text_input(key="sign_in_user").input("alice")
    at.text_input(key="sign_in_password").input("correct horse")
    at.button[0].click().run()
    assert [t.value for t in at.title] == ["Library"]


def test_break2_unknown_user_and_broken_users_file(users_file: Path) -> None:
    at = _home().run()
    at.text_input(key="sign_in_user").input("mallory")
    at.text_input(key="sign_in_password").input("correct horse")
    at.button[0].click().run()
    assert any("Wrong user name or password" in e.value for e in at.error) and not at.metric
    users_file.write_text("[users\nbroken")
    at.text_input(key="sign_in_user").input("alice")
    at.text_input(key="sign_in_password").input("correct horse")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("is not valid TOML" in e.value for e in at.error) and not at.metric


def test_break2_without_sign_in_configured_nothing_changes(app_env: Path) -> None:
    at = _home().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "VLScope"
    assert not any(b.key == "sign_out" for b in at.button)


def test_break2_oidc_not_set_up_says_exactly_what_to_configure(app_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("VLSCOPE_AUTH_OIDC", "true")
    at = _home()
    at.secrets["unrelated"] = "x"  # a secrets.toml without [auth]
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Sign-in is not set up" and not at.metric
    error = shown_text(at.error[0].value)
    for key in ("redirect_uri", "cookie_secret", "client_id", "client_secret", "server_metadata_url"):
        assert f"[auth] {key}" in error
    assert error.startswith("VLSCOPE_AUTH_OIDC is on, but sign-in")
    assert "server_metadata_url" in at.code[0].value and "/oauth2callback" in at.code[0].value


def test_break2_oidc_signed_in_user_is_named(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLSCOPE_AUTH_OIDC", "true")
    at = _home()
    at.secrets["auth"] = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "s" * 32,
                          "client_id": "vlscope", "client_secret": "c", "server_metadata_url":
                          "http://127.0.0.1:9/.well-known/openid-configuration"}
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Sign in to VLScope" and at.button(key="sign_in_oidc")
    at.user = {"is_logged_in": True, "email": "bob@example.com", "name": "Bob"}
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "VLScope"
    assert any(shown_text(c.value) == "Signed in as bob@example.com" for c in at.sidebar.caption)
