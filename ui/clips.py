"""Clip buttons for the Video and Summaries pages: export a stretch (an event, an answer time, a chapter) as a
video file and a contact sheet, then download them; and a highlights picker joining chosen stretches.

Only widgets here: the work is the clips service's (core/app/clips.py). Files made once are kept (in the
cache folder's clips folder), so a button pressed again, on any page or in any session, offers the file at once.

    clip_buttons(stored.path, [event], key=f"ev{i}", name=stored.name, input_hash=stored.sha256)
    highlights_picker(stored.path, events, key="hl", name=stored.name, input_hash=stored.sha256)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import streamlit as st

from core.app.clips import ClipFile, ClipService, Stretch
from core.errors import UserError
from core.media.errors import Cancelled
from ui.safe import plain

LAZY_BYTES = 64 * 1024**2  # larger files are read only when their download button is pressed


def _service() -> ClipService:
    from ui.state import get_runtime

    runtime = get_runtime()
    service = getattr(runtime, "clips", None)
    return service if isinstance(service, ClipService) else ClipService(runtime)


def _words(exc: BaseException, service: ClipService) -> str:
    """The error's message with the server's folders named in plain words."""
    text = str(exc)
    try:
        folder = service.folder()
        for internal in (str(folder.resolve()), str(folder)):
            text = text.replace(internal, "the clips folder")
    except UserError:
        pass
    return text


def _stretch_label(value: Any, duration: float | None) -> str:
    return Stretch.of(value, duration=duration).describe()


def _probe(service: ClipService, video_path: str | Path, input_hash: str | None) -> Any:
    """The video's probe (cached), or None with an error shown when the file cannot be used."""
    try:
        return service.probe(video_path, input_hash)
    except UserError as exc:
        st.error(plain(f"Clips cannot be made from this file: {_words(exc, service)}"))
        return None


def _download(made: ClipFile, key: str) -> None:
    """The download button of a file made (with what it holds under it)."""
    noun = {"clip": "clip", "sheet": "contact sheet", "highlights": "highlights"}[made.kind]
    size = Path(made.path).stat().st_size if Path(made.path).exists() else made.size_bytes
    data: Any = made.read_bytes() if size <= LAZY_BYTES else made.read_bytes
    st.download_button(f"Download the {noun}", data=data, file_name=made.name, mime=made.media_type, key=key,
                       icon=":material/download:", on_click="ignore")
    st.caption(plain(made.summary()))
    if made.kind != "sheet" and made.reason:
        st.caption(plain(f"How: {made.reason}."))
    for w in made.warnings:
        st.caption(plain(f"Note: {w}"))


def _run(service: ClipService, what: str, work: Any) -> ClipFile | None:
    try:
        with st.spinner(what):
            return work()
    except (UserError, Cancelled) as exc:
        st.error(plain(f"The file could not be made: {_words(exc, service)}"))
    except OSError as exc:
        st.error(plain(f"The file could not be made: the server could not write it ({exc.strerror or 'disk error'}). "
                       "Free some disk space or ask the administrator to check the cache folder."))
    return None


def clip_buttons(video_path: str | Path, stretches: Sequence[Any], key: str, *, name: str | None = None,
                 input_hash: str | None = None, sheet_tiles: int = 12) -> None:
    """Buttons that export a stretch as a clip and as a contact sheet, then offer each for download.

    `stretches`: Events, Stretches, dicts with start/end(/label) or (start, end[, label]) tuples; a moment
    (start == end, e.g. an answer time) is the ten seconds around it. With several, a choice of which one
    comes first. `key`: unique on the page. `name`: the file name the user knows (downloads are named after it).
    """
    items = list(stretches)
    if not items:
        return
    service = _service()
    info = _probe(service, video_path, input_hash)
    if info is None:
        return
    choice = 0
    if len(items) > 1:
        choice = st.selectbox("Stretch", range(len(items)),
                              format_func=lambda i: _stretch_label(items[i], info.duration), key=f"{key}_pick")
    chosen = items[choice if choice is not None else 0]
    s = Stretch.of(chosen, duration=info.duration)
    state = f"clips:{key}:{round(s.start, 3)}-{round(s.end, 3)}"
    cols = st.columns(2)
    if cols[0].button("Export clip", key=f"{key}_clip", icon=":material/movie:",
                      help="The stretch as a video file (copied as it is when it starts on a key frame, "
                           "re-encoded otherwise)"):
        made = _run(service, "Cutting the clip...",
                    lambda: service.clip(video_path, chosen, input_hash=input_hash, name=name, info=info))
        if made is not None:
            st.session_state[f"{state}:clip"] = made
    if cols[1].button("Contact sheet", key=f"{key}_sheet", icon=":material/grid_view:",
                      help=f"One picture with {sheet_tiles} frames of the stretch and their times"):
        made = _run(service, "Taking the frames...",
                    lambda: service.sheet(video_path, chosen, input_hash=input_hash, name=name, tiles=sheet_tiles,
                                          info=info))
        if made is not None:
            st.session_state[f"{state}:sheet"] = made
    for kind, col in (("clip", cols[0]), ("sheet", cols[1])):
        made = st.session_state.get(f"{state}:{kind}")
        if made is not None:
            with col:
                try:
                    _download(made, f"{key}_{kind}_dl")
                except UserError as exc:
                    st.session_state.pop(f"{state}:{kind}", None)
                    st.warning(plain(str(exc)))


def highlights_picker(video_path: str | Path, stretches: Sequence[Any], key: str, *, name: str | None = None,
                      input_hash: str | None = None) -> None:
    """Choose stretches (in the order shown) and export them joined as one video file, then download it."""
    items = list(stretches)
    if not items:
        return
    service = _service()
    info = _probe(service, video_path, input_hash)
    if info is None:
        return
    duration = info.duration
    picked = st.multiselect("Stretches to join", range(len(items)),
                            format_func=lambda i: _stretch_label(items[i], duration), key=f"{key}_pick",
                            placeholder="Choose events, answers or chapters")
    chosen = sorted((items[i] for i in picked), key=lambda v: Stretch.of(v).start)  # in the order of the video
    spans = [Stretch.of(v, duration=duration) for v in chosen]
    total = sum(max(0.0, s.end - s.start) for s in spans)
    if chosen:
        st.caption(plain(f"{len(chosen)} stretch{'es' if len(chosen) != 1 else ''}, about {total:.1f} s in all, "
                         "joined in the order of the video."))
    state = f"clips:{key}:highlights:" + ",".join(f"{s.start:.3f}-{s.end:.3f}" for s in spans)
    if st.button("Export highlights", key=f"{key}_go", icon=":material/video_library:", disabled=not chosen):
        made = _run(service, "Joining the stretches...",
                    lambda: service.highlights(video_path, chosen, input_hash=input_hash, name=name, info=info))
        if made is not None:
            st.session_state[state] = made
    made = st.session_state.get(state)
    if made is not None:
        try:
            _download(made, f"{key}_dl")
        except UserError as exc:
            st.session_state.pop(state, None)
            st.warning(plain(str(exc)))
