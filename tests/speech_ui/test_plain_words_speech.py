"""Plain words where speech is shown (the dashboard's walk, tests/dashboard/test_plain_words.py, with a
transcript made): the Video Q&A page with its speech stage done, Summaries and the Library's item show no
exception class names, internal paths or command-line options, and the engine's model folder is never named."""

from __future__ import annotations

from pathlib import Path

from tests.dashboard.test_plain_words import offenders, open_page, shown_texts
from tests.pages.conftest import wait_job


def test_the_pages_with_a_transcript_in_plain_words(app_env: Path, speech_video, tiny_model_dir: Path,
                                                    monkeypatch) -> None:
    monkeypatch.setenv("VLSCOPE_MODEL", str(tiny_model_dir))  # as the dashboard's walk has it (a model configured)
    allowed = (str(tiny_model_dir), str(app_env / "cache"))
    at = open_page("video")
    at.file_uploader(key="video_upload").set_value(("talk.mp4", speech_video.path.read_bytes(), "video/mp4")).run()
    for stage in ("scenes", "motion", "text"):
        at.checkbox(key=f"video_stage_{stage}").uncheck().run()
    at.button(key="video_analyze").click().run()
    wait_job("speech:")
    at.run()
    assert not at.exception, at.exception
    texts = shown_texts(at)
    assert any(t.startswith("**Transcript** · 2 segments") for t in texts)
    findings = offenders(texts, allowed)
    at.text_input(key="video_transcript_query").input("nothing like this").run()
    findings += offenders(shown_texts(at), allowed)

    summaries = at.switch_page("pages/summaries.py").run()
    assert not summaries.exception, summaries.exception
    findings += offenders(shown_texts(summaries), allowed)

    library = at.switch_page("pages/library.py").run()
    library.text_input(key="lib_query").input("morning").run()
    library.button(key="lib_hit_details_0").click().run()
    assert not library.exception, library.exception
    texts = shown_texts(library)
    assert any(t.startswith("**Speech** · 2 segment(s)") for t in texts)
    findings += offenders(texts, allowed)
    assert not findings, "\n".join(findings)
    assert not any("uploads" in t or "cmusphinx" in t for t in texts)
