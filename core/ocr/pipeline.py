"""The OCR pipeline: load pages, preprocess, choose an engine, read, rebuild tables, read invoice fields.

`run_ocr(source, options, settings=..., cache=..., engines=..., progress=...)` reads a document (the
application layer, core.app.documents, calls it with the runtime's settings, cache and OCR engines).
With a cache it stores every page as it is read (content hash + options + engine version), so a
re-run or a resumed run is instant and a crash loses nothing already computed. Without settings it
uses the defaults (`Settings()`); without `engines`, a registry of the CPU engines only.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.ocr.base import EngineOutput, OcrEngine
from core.ocr.engines import RapidOcrEngine, TesseractEngine, script_from_osd, tesseract_languages
from core.events import CancelToken, Progress
from core.ocr.loading import (DEFAULT_MAX_PAGES, PageImage, _read_source, count_pages, heavy, is_pdf,
                               iter_pages, ocr_bytes, page_pixels)
from core.ocr.preprocess import (HEADLINE, Layout, Preprocessed, PreprocessOptions, StepRecord, analyse_layout,
                                 headline_strength, mean_std, pad_small, photometric_needs, preprocess, scaled_to_text)
from core.ocr.scripts import (CJK_SCRIPTS, LANGUAGES, RTL_SCRIPTS, char_script, detect_script, drop_foreign_tokens, lang_parts, merge_mark_lines,
                              normalise_lang, order_lines, rapidocr_reads, script_language, strip_direction_marks)
from core.ocr.vertical import Ruby, looks_vertical, order_vertical, vertical_share
from core.ocr.registry import OcrRegistry
from core.ocr.types import (ENGINE_NAMES, Annotation, OcrError, OcrLine, OcrPage, OcrResult, PreprocessInfo,
                            jsonable)
from core.settings import Settings

log = logging.getLogger(__name__)

RESULT_STAGE = "ocr-page"
PIPELINE_VERSION = "4"  # 4: tesseract's plain reading replaced only where it fails; ruby as page annotations
# 3: the plain reading is a candidate; layout modes; vertical blocks and ruby
# 2: sparse pages (one line on a white page) are read, no longer stretched to black
PREVIEW_BYTES_PER_PIXEL = 3 * 8 + 8


@dataclass
class OcrOptions:
    """Everything that decides an OCR result (it is part of the cache key)."""

    engine: Literal["auto", "rapidocr", "tesseract", "vlm"] = "auto"
    lang: str | None = None  # hint such as en, zh, zh-tw, ja, ar, hi, sa; None = detect the script
    pages: str | None = None  # 1-based ranges, e.g. "1-3,5"; None = all
    dpi: int = 200
    enhanced: bool = False
    vertical: Literal["auto", "on", "off"] = "auto"
    use_text_layer: bool = True
    tables: bool = True
    fields: Literal["auto", "on", "off"] = "auto"
    vlm_mode: Literal["text", "markdown", "boxes"] = "boxes"
    max_pages: int = DEFAULT_MAX_PAGES
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)

    def __post_init__(self) -> None:
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessOptions.from_dict(self.preprocess)
        if self.engine not in ENGINE_NAMES:
            raise OcrError(f"unknown OCR engine {self.engine!r}; choose {', '.join(ENGINE_NAMES)}")
        if self.vertical not in ("auto", "on", "off"):
            raise OcrError(f"vertical must be auto, on or off, not {self.vertical!r}")
        if self.fields not in ("auto", "on", "off"):
            raise OcrError(f"fields must be auto, on or off, not {self.fields!r}")
        if not 30 <= int(self.dpi) <= 600:
            raise OcrError(f"DPI {self.dpi} is out of range; choose 30 to 600 (200 suits most documents)")
        if self.max_pages < 1:
            raise OcrError("the page limit must be at least 1")
        self.lang = normalise_lang(self.lang)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return jsonable(asdict(self))

    def page_key_params(self) -> dict[str, Any]:
        """The options that change one page's result (page selection and limits excluded)."""
        d = self.to_dict()
        for k in ("pages", "max_pages", "fields"):
            d.pop(k)
        d["pipeline"] = PIPELINE_VERSION
        return d


def _tesseract_only(lang: str | None) -> bool:
    return bool(lang) and not rapidocr_reads(lang)


def _settings(settings: Settings | None, engines: OcrRegistry | None) -> Settings:
    """The settings given, else the engines', else the defaults (a library call); never the environment."""
    if settings is not None:
        return settings
    return engines.settings if engines is not None else Settings()


def _registry(settings: Settings | None, engines: OcrRegistry | None) -> OcrRegistry:
    """The engines given, else the CPU engines (a library call without the application's model)."""
    return engines if engines is not None else OcrRegistry(_settings(settings, None))


def choose_engine(options: OcrOptions, engines: OcrRegistry) -> OcrEngine:
    """The engine for these options: the one named, else by language hint (RapidOCR when it reads it)."""
    if options.engine != "auto":
        return engines.get(options.engine)
    if _tesseract_only(options.lang):
        return engines.get("tesseract")
    return engines.get("rapidocr")


PLAIN_CONFIDENT = {"rapidocr": 0.90, "tesseract": 0.85}
"""Character-weighted confidence above which the engine's plain reading of a clean image is kept as it is,
without trying VLScope's preprocessing (a confident reading is not beaten by another one: measured on the
evaluation sets, docs/ocr-reading.md)."""
PREFER_MARGIN = 0.02
"""How much better (score) one reading must be to replace the other: below that the two are equal and the
one whose preprocessing the image was measured to need (dark, noisy, tilted...) is kept."""
TILT_DEGREES = 1.5
"""Line boxes tilted more than this (median) send a confident plain reading through deskewing too."""


@dataclass
class Reading:
    """What reading one image gave: the engine output, the image it was read on (and how it maps back), the
    ruby (furigana) taken out of vertical text, notes for the page's warnings, and which candidate won."""

    out: EngineOutput
    pre: Preprocessed
    ruby: list[Ruby] = field(default_factory=list)
    candidate: str = "plain"


def _alnum(out: EngineOutput) -> int:
    return sum(2 if detect_script(ch) in ("Han", "Japanese", "Hangul") else 1 for ln in out.lines for ch in ln.text
               if ch.isalnum())


def _letters_in(out: EngineOutput, script: str) -> int:
    """Letters of `script` in a reading (digits and other scripts' letters do not count): a pack that read a
    line of another script as digits and one letter of its own is not sure of its script."""
    return sum(1 for ln in out.lines for ch in ln.text if ch.isalpha() and char_script(ch) == script)


def _score(out: EngineOutput) -> float:
    """A quality score that needs no ground truth: confidence, less for readings of a few characters."""
    chars = sum(len(ln.text) for ln in out.lines)
    return out.mean_confidence * min(1.0, chars / 8.0)


SCRIPT_PACKS = (("ar", "ara"), ("hi", "san+hin"), ("ru", "rus"), ("en", "eng"))
"""The scripts looked for in a text without a hint that RapidOCR does not read confidently, each with the
tesseract pack it is read with (one pack at a time: a mixed `ara+hin` pack put Devanagari digits into Arabic
text; Devanagari with the Sanskrit pack first, which reads the conjuncts Hindi text also has)."""
SCRIPT_SURE = {"ar": 0.7, "hi": 0.7, "ru": 0.9, "en": 0.9}
"""A reading in the script of its pack at least this confident settles the script, and no other pack is tried.
On ink of another script (Arabic, Devanagari, Latin and Cyrillic lines, docs/ocr-reading.md) the Arabic and
Devanagari packs read their own script at most 0.59 confident, the English and Russian packs (whose letters share
shapes) up to 0.83."""
MIN_SCRIPT_CONFIDENCE = 0.2
"""A reading in a script RapidOCR cannot read below this confidence is noise, not a script found."""


def _tesseract_psm(layout: Layout | None, vertical: bool) -> str:
    if vertical:
        return "5"
    if layout is None:
        return "3"
    psm = layout.psm
    return "3" if psm == "5" else psm  # a vertical-looking layout read as horizontal text: let tesseract decide


def _tess_read(tess: OcrEngine, image: np.ndarray, lang: str | None, vertical: bool | None, layout: Layout | None,
               pack: str | None = None, psm: str | None = None) -> EngineOutput:
    if isinstance(tess, TesseractEngine):
        return tess.read(image, lang, vertical, pack=pack, psm=psm or _tesseract_psm(layout, bool(vertical)))
    return tess.read(image, lang, vertical)


def _mapped(out: EngineOutput, matrix: np.ndarray, variant: str) -> EngineOutput:
    """`out`, read on a copy made with `matrix` (3x3, image -> copy), with its boxes mapped back onto the image."""
    inv = np.linalg.inv(matrix)
    for ln in out.lines:
        pts = np.hstack([np.asarray(ln.box, dtype=np.float64), np.ones((len(ln.box), 1))]) @ inv.T
        ln.box = [[round(float(x), 1), round(float(y), 1)] for x, y in pts[:, :2]]
    out.variant = variant
    return out


def _chars(out: EngineOutput) -> int:
    return sum(len(ln.text.strip()) for ln in out.lines)


def _tess_once(tess: OcrEngine, image: np.ndarray, layout: Layout, lang: str | None, pack: str | None,
               vertical: bool | None) -> EngineOutput:
    """Tesseract on the image as it is, in the layout mode of the image (what a user gets from the engine alone);
    a line in which it finds nothing is read again in raw-line mode (`--psm 13`, no layout analysis: tesseract's
    line finder drops some large-type lines whole)."""
    out = _tess_read(tess, image, lang, vertical, layout, pack=pack)
    if not out.lines and not vertical and layout.mode == "line" and isinstance(tess, TesseractEngine):
        again = tess.read(image, lang, False, pack=pack, psm="13")
        if again.lines:
            again.variant = "raw-line"
            return again
    return out


def _touches_edge(image: np.ndarray, layout: Layout) -> bool:
    """True when the ink reaches the edge of the image (within a pixel): tesseract misreads such crops (words cut
    at their box); a crop with a few pixels of paper around its text it reads as it is (a border added then only
    raises its confidence, not its accuracy: Devanagari lines read worse with it)."""
    x0, y0, x1, y1 = layout.box
    h, w = image.shape[:2]
    return min(x0, y0, w - x1, h - y1) <= 1


def _tess_line(tess: OcrEngine, image: np.ndarray, layout: Layout, lang: str | None, pack: str | None,
               vertical: bool | None, first: EngineOutput | None = None) -> EngineOutput:
    """Tesseract's reading of an image: its plain reading (`_tess_once`, or `first` when already made), replaced
    only where tesseract fails on the image as it is. When it finds no line, the best of the raw-line reading, a
    copy with a border of paper and a copy whose text is 40 px high; a crop whose ink touches its edges is also
    read with a border of paper, kept when that is more confident (words cut at their box come back misread).
    A reading of one character is not replaced by a longer one (tesseract reads marks into the border).
    Boxes are in `image`'s pixels."""
    out = first if first is not None else _tess_once(tess, image, layout, lang, pack, vertical)
    if not isinstance(tess, TesseractEngine):
        return out
    pack = pack or out.pack or None
    psm = _tesseract_psm(layout, bool(vertical))
    img_p, m_p, did_p = pad_small(image, layout)
    if not out.lines or out.variant == "raw-line":  # no line found in the image as it is
        alts = [out] if out.lines else []
        if did_p:
            alts.append(_mapped(tess.read(img_p, lang, vertical, pack=pack, psm=psm), m_p, "padded"))
        img_s, m_s, did_s = scaled_to_text(image, layout)
        if did_s:
            alts.append(_mapped(tess.read(img_s, lang, vertical, pack=pack, psm=_tesseract_psm(
                analyse_layout(img_s), bool(vertical))), m_s, "scaled"))
        found = [a for a in alts if a.lines]
        return max(found, key=lambda a: a.mean_confidence) if found else out
    if did_p and _touches_edge(image, layout) and _chars(out) >= 2 and out.mean_confidence < 0.95:
        padded = _mapped(tess.read(img_p, lang, vertical, pack=pack, psm=psm), m_p, "padded")
        if padded.lines and padded.mean_confidence >= out.mean_confidence + PREFER_MARGIN:
            return padded
    return out


def _rapid_read(rapid: OcrEngine, image: np.ndarray, lang: str | None, vertical: bool | None,
                classify: bool) -> EngineOutput:
    if isinstance(rapid, RapidOcrEngine):
        return rapid.read(image, lang, vertical, classify=classify)
    return rapid.read(image, lang, vertical)


def _read_auto(image: np.ndarray, options: OcrOptions, vertical: bool | None, engines: OcrRegistry,
               layout: Layout | None = None, classify: bool = True, pack: str | None = None) -> EngineOutput:
    """Auto choice: by hint, else RapidOCR first and Tesseract when the script is one RapidOCR cannot read.
    Tesseract reads in the layout mode of the image (one line, one block, sparse text, a page), with `pack` when
    given (the pack a script was found with); RapidOCR reads small and tight crops with a border of paper.
    Boxes are in `image`'s pixels."""
    layout = layout if layout is not None else analyse_layout(image)
    lang = options.lang
    if options.engine == "vlm":
        from core.ocr.vlm import VlmOcrEngine

        eng = engines.get("vlm")
        if isinstance(eng, VlmOcrEngine):
            return eng.read(image, lang, vertical, mode=options.vlm_mode)
        return eng.read(image, lang, vertical)
    if options.engine == "tesseract" or (options.engine == "auto" and _tesseract_only(lang)):
        return _tess_line(engines.get("tesseract"), image, layout, lang, pack, vertical)
    rapid = engines.get("rapidocr" if options.engine == "auto" else options.engine)
    small = layout.mode in ("line", "column")
    img_p, m_p, did_p = pad_small(image, layout)  # RapidOCR misses text that touches the edges of a crop

    def read(cls: bool) -> EngineOutput:
        o = _rapid_read(rapid, img_p, lang, vertical, cls)
        return _mapped(o, m_p, "") if did_p else o

    def turned(o: EngineOutput) -> EngineOutput:
        # one poor line: it may be upside down, which RapidOCR's line classifier turns
        if small and not classify and isinstance(rapid, RapidOcrEngine) and (not o.lines or o.mean_confidence < 0.85):
            again = read(True)
            if _score(again) > _score(o) + PREFER_MARGIN:
                again.variant = "classified"
                return again
        return o

    out = read(classify)
    if options.engine != "auto" or lang:
        out = turned(out)
        if not out.language:
            out.language = script_language(out.script)
        return out
    # confident and more than a stray mark (RapidOCR reads Cyrillic, for one, as a few dots)
    if out.lines and out.mean_confidence >= 0.85 and _alnum(out) >= 4:
        out.language = out.language or script_language(out.script)
        return out
    try:
        tess = engines.get("tesseract")
    except OcrError:
        tess = None
    if not isinstance(tess, TesseractEngine):
        out = turned(out)
        out.warnings.append("text may be in a script RapidOCR cannot read; install tesseract-ocr for more scripts")
        return out
    found = _find_script(tess, image, layout, vertical, out)
    if found is None:  # Latin or CJK after all (or nothing readable): RapidOCR's reading
        out = turned(out)
        out.language = out.language or script_language(out.script)
        return out
    found.language = script_language(found.script)
    found.lines = order_lines(found.lines, rtl=found.script in RTL_SCRIPTS, vertical=found.vertical)
    return found


def _find_script(tess: TesseractEngine, image: np.ndarray, layout: Layout, vertical: bool | None,
                 rapid_out: EngineOutput) -> EngineOutput | None:
    """The reading of a text without a hint that RapidOCR did not read confidently, when its script is one
    RapidOCR cannot read: tesseract's script detection on pages (it finds nothing on a line), else a reading per
    script of SCRIPT_PACKS (Devanagari first when the ink has a headline), stopping at one that settles it
    (SCRIPT_SURE), and the most confident reading in the script of its own pack. None when that is Latin, or
    nothing reads: the caller keeps RapidOCR's reading. Boxes are in `image`'s pixels."""
    packs = set(tesseract_languages())
    small = layout.mode in ("line", "column")
    hint = None if small else script_from_osd(tess, image)
    if hint is not None:
        if not _tesseract_only(hint):
            return None
        try:
            t = _tess_line(tess, image, layout, hint, None, vertical)
        except OcrError as exc:
            rapid_out.warnings.append(str(exc))
            return None
        return t if t.lines and t.script == LANGUAGES[hint][0] else None
    order = []
    for k, pack in SCRIPT_PACKS:
        if k == "hi" and "san" not in packs:
            pack = "hin"
        if set(pack.split("+")) <= packs:
            order.append((k, pack))
    headline = layout.mode == "line" and headline_strength(image, layout) >= HEADLINE
    if headline:
        order.sort(key=lambda kp: kp[0] != "hi")  # the ink has Devanagari's headline: read that script first
    readings: list[EngineOutput] = []
    sure = None
    try:
        for k, pack in order:
            t = _tess_once(tess, image, layout, None, pack, False)
            t.language = k
            readings.append(t)
            if t.script == LANGUAGES[k][0] and _letters_in(t, t.script) >= 4 and t.mean_confidence >= SCRIPT_SURE[k]:
                sure = t
                break
    except OcrError as exc:
        rapid_out.warnings.append(str(exc))
    own = [t for t in readings if t.lines and t.script == LANGUAGES[t.language][0]]
    # the most confident reading of those that read at least a word of their script (a pack that turned another
    # script's line into digits and a letter can be as confident as the right one)
    best = sure or max(own, key=lambda t: (_letters_in(t, t.script) >= 4, t.mean_confidence), default=None)
    devanagari = next((t for t in own if t.language == "hi"), None)
    if sure is None and headline and devanagari is not None:
        best = devanagari  # no other script is sure, and the ink has Devanagari's headline (a word or a letter)
    if best is None or (best.mean_confidence < MIN_SCRIPT_CONFIDENCE and not (headline and best is devanagari)):
        return None
    if best.language == "en":
        if not rapid_out.lines and best.mean_confidence >= 0.6:
            return best  # Latin that RapidOCR found nothing in
        return None
    try:
        return _tess_line(tess, image, layout, None, best.pack, False, first=best)
    except OcrError:
        return best


def _cpu_engine(engines: OcrRegistry, name: str) -> OcrEngine | None:
    try:
        return engines.get(name)
    except OcrError:
        return None


def _orientation_fn(options: OcrOptions, state: dict[str, Any], engines: OcrRegistry):
    if options.vertical == "on":
        return None
    if options.engine == "tesseract" or _tesseract_only(options.lang):
        tess = _cpu_engine(engines, "tesseract")
        if not isinstance(tess, TesseractEngine):
            return None

        def by_osd(img: np.ndarray) -> tuple[int, float]:
            try:
                turn, _script, _conf = tess.osd(img)
            except OcrError:
                return 0, 0.0
            return turn, 1.0

        return by_osd
    rapid = _cpu_engine(engines, "rapidocr")
    if not isinstance(rapid, RapidOcrEngine):
        return None

    def by_rapid(img: np.ndarray) -> tuple[int, float]:
        turn, conf, vertical = rapid.orientation(img, allow_vertical=options.vertical == "auto")
        state["vertical"] = vertical
        return turn, conf

    return by_rapid


def _engine_name(options: OcrOptions) -> str:
    if options.engine != "auto":
        return options.engine
    return "tesseract" if _tesseract_only(options.lang) else "rapidocr"


def _confident(out: EngineOutput) -> bool:
    threshold = PLAIN_CONFIDENT.get(out.engine)
    return threshold is not None and bool(out.lines) and out.mean_confidence >= threshold and _alnum(out) >= 2


def _tilt(out: EngineOutput) -> float:
    """Median tilt in degrees of the long line boxes, from their longer edge (0 for axis-aligned boxes such as
    tesseract's, and when no box is long)."""
    angles = []
    for ln in out.lines:
        if len(ln.box) != 4 or ln.vertical:
            continue
        p0, p1, p2 = (np.asarray(ln.box[i], dtype=float) for i in range(3))
        a, b = p1 - p0, p2 - p1
        long, short = (a, b) if np.hypot(*a) >= np.hypot(*b) else (b, a)
        if np.hypot(*long) < 3 * max(np.hypot(*short), 1.0):
            continue
        deg = math.degrees(math.atan2(long[1], long[0]))
        deg = (deg + 90) % 180 - 90  # direction of a line, not of an arrow
        angles.append(deg)
    return float(np.median(angles)) if angles else 0.0


def _forced_steps(opts: PreprocessOptions) -> list[str]:
    return [k for k, v in opts.to_dict().items() if v == "on"]


def _vertical_wanted(options: OcrOptions, layout: Layout) -> bool | None:
    """The vertical flag to read with: forced on or off, else from the ink layout for a CJK hint (tesseract
    needs its vertical models chosen before reading), else None (decided from the reading)."""
    forced = {"on": True, "off": False}.get(options.vertical)
    if forced is not None:
        return forced
    if layout.mode in ("vertical", "column") and any(p in ("zh", "zh-tw", "ja") for p in lang_parts(options.lang)):
        return True
    return None



def _with_layout(pre: Preprocessed, layout: Layout) -> Preprocessed:
    info = PreprocessInfo(list(pre.info.steps), pre.info.orientation, pre.info.skew,
                          {**pre.info.details, "layout": layout.mode})
    return Preprocessed(pre.image, pre.matrix, info, pre.steps)


def _read_once(image: np.ndarray, options: OcrOptions, engines: OcrRegistry, layout: Layout,
               classify: bool, pack: str | None = None) -> EngineOutput:
    out = _read_auto(image, options, _vertical_wanted(options, layout), engines, layout, classify=classify, pack=pack)
    if options.vertical == "on" and out.engine == "tesseract" and layout.mode not in ("vertical", "column"):
        # vertical asked on a page whose ink runs in rows: read it horizontally too, keep the better reading
        try:
            horiz = _read_auto(image, replace(options, vertical="off"), False, engines, layout, pack=pack)
        except OcrError:
            return out
        if _score(horiz) > _score(out) + PREFER_MARGIN:
            horiz.warnings.append("vertical reading was asked, but this page's text runs horizontally: it was read "
                                  "as horizontal text")
            return horiz
    return out


def _candidate(out: EngineOutput, default: str) -> str:
    return "classified" if out.variant == "classified" else default


def _read_image(image: np.ndarray, options: OcrOptions, engines: OcrRegistry, keep_images: bool = False,
                timings: dict[str, float] | None = None) -> Reading:
    """The chosen reading of one image (`_choose`) with VLScope's layout on it (`_finish`); `timings`, when
    given, gets the seconds of each stage: layout, plain, preprocess, vlscope, enhanced, finish."""
    clock = _Clock(timings)
    reading = _choose(image, options, engines, keep_images, clock)
    if options.engine == "vlm":
        return reading
    reading = _finish(reading, options)
    clock.lap("finish")
    return reading


def _choose(image: np.ndarray, options: OcrOptions, engines: OcrRegistry, keep_images: bool,
            clock: "_Clock") -> Reading:
    """Read one image. The engine's plain reading (the image as it is, its layout mode chosen from the ink:
    one line, one block, sparse text, a page; small and tight crops given a border of paper) is always a
    candidate, read once; VLScope's preprocessing (orientation, deskew, light, contrast, noise) is tried when the
    plain reading is not confident or the image measures as needing it, and wins only when it reads better."""
    layout = analyse_layout(image)
    clock.lap("layout")
    if options.engine == "vlm":
        # the model reads a page once (it is the slow engine): on the preprocessed page, as before
        state: dict[str, Any] = {}
        pre = preprocess(image, options.preprocess, _orientation_fn(options, state, engines), keep_images=keep_images)
        vertical = {"on": True, "off": False}.get(options.vertical, True if state.get("vertical") else None)
        return Reading(_read_auto(pre.image, options, vertical, engines), pre, candidate="vlscope")
    # the image as it is: the engines' own copies (a border of paper, a smaller copy) map their boxes back onto it
    ident = Preprocessed(image, np.eye(3), PreprocessInfo([], 0, 0.0, {"layout": layout.mode}), [])
    plain = _read_once(image, options, engines, layout, classify=False)
    clock.lap("plain")
    plain.warnings = list(plain.warnings)
    best = Reading(plain, ident, candidate=_candidate(plain, "plain"))
    needs = photometric_needs(image, options.preprocess) + _forced_steps(options.preprocess)
    tilt = _tilt(plain)
    if abs(tilt) > TILT_DEGREES:
        needs.append("deskew")
    if plain.lines and vertical_share(plain.lines) > 0.5 and plain.script not in CJK_SCRIPTS:
        needs.append("orientation")  # text that is not CJK running top to bottom: a turned page
    if not options.enhanced and not needs and _confident(plain):
        return best
    pack = None
    if options.engine == "auto" and not options.lang and plain.engine == "tesseract" and plain.language:
        # the script found: read it directly from now on, with the pack that found it
        options, pack = replace(options, lang=plain.language), plain.pack or None
    line = layout.mode in ("line", "column") and len(plain.lines) <= 1  # one band of ink that reads as one line
    geometric = bool({"deskew", "orientation"} & set(needs))
    if not options.enhanced and (line and not geometric and (_confident(best.out) or not needs)
                                 or not needs and _confident(best.out)):
        # a confident reading of one line is not bettered by preprocessing it; nor is a clean page's
        return best
    # VLScope's reading: preprocessing, then the same engine choice on the image it gives
    state = {}
    turn = None if line and options.preprocess.orientation != "on" else _orientation_fn(options, state, engines)
    pre = preprocess(image, options.preprocess, turn, keep_images=keep_images)
    clock.lap("preprocess")
    if pre.info.steps:
        layout2 = analyse_layout(pre.image)
        opts2 = options
        if state.get("vertical") and options.vertical == "auto":
            opts2 = replace(options, vertical="on")
        ours = _read_once(pre.image, opts2, engines, layout2, classify=True, pack=pack)
        margin = -PREFER_MARGIN if needs else PREFER_MARGIN
        if _score(ours) > _score(best.out) + margin:
            best = Reading(ours, _with_layout(pre, layout2), candidate="vlscope")
    elif not line and not _confident(best.out) and best.out.engine == "rapidocr" and options.engine in ("auto", "rapidocr"):
        # nothing to correct, yet a poor reading: upside-down lines are read again with the line classifier
        again = _read_once(image, replace(options, engine="rapidocr"), engines, layout, classify=True)
        if _score(again) > _score(best.out) + PREFER_MARGIN:
            best = Reading(again, ident, candidate="classified")
    clock.lap("vlscope")
    if options.enhanced:
        best = _enhance(image, options, engines, best, keep_images, pack)
        clock.lap("enhanced")
    return best


class _Clock:
    """Seconds per stage into a dict (nothing when the dict is None)."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into, self.t = into, time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.into is None:
            return
        now = time.perf_counter()
        self.into[stage] = round(self.into.get(stage, 0.0) + now - self.t, 4)
        self.t = now


def _enhance(image: np.ndarray, options: OcrOptions, engines: OcrRegistry, best: Reading,
             keep_images: bool, pack: str | None = None) -> Reading:
    """Enhanced mode: try an upscaled and a contrast-enhanced copy and other orientations; keep the most
    confident reading."""
    variants: list[PreprocessOptions] = []
    base = options.preprocess
    if base.upscale != "on":
        variants.append(PreprocessOptions(**{**base.to_dict(), "upscale": "on"}))
    if base.contrast != "on":
        variants.append(PreprocessOptions(**{**base.to_dict(), "contrast": "on", "denoise": "on"}))
    for variant in variants:
        if _score(best.out) >= 0.97:
            break  # a reading this confident is not beaten by another variant: save the time
        p2 = preprocess(image, variant, _orientation_fn(options, {}, engines), keep_images=keep_images)
        lay = analyse_layout(p2.image)
        o2 = _read_once(p2.image, options, engines, lay, classify=True, pack=pack)
        if _score(o2) > _score(best.out) + 0.005:
            best = Reading(o2, _with_layout(p2, lay), candidate="enhanced")
    if options.vertical != "on" and not best.out.vertical and _score(best.out) < 0.97:
        from core.ocr.preprocess import rotate90

        for turn in (90, 180, 270):
            rotated, m = rotate90(best.pre.image, turn)
            o3 = _read_once(rotated, options, engines, analyse_layout(rotated), classify=True, pack=pack)
            if _score(o3) > _score(best.out) + 0.02:
                bp = best.pre
                info = PreprocessInfo(list(bp.info.steps) + ["orientation"], (bp.info.orientation + turn) % 360,
                                      bp.info.skew, dict(bp.info.details))
                best = Reading(o3, Preprocessed(rotated, m @ bp.matrix, info, bp.steps + [StepRecord(
                    "orientation", True, f"enhanced: turned {turn} more")]), candidate="enhanced")
    return best


def _finish(reading: Reading, options: OcrOptions) -> Reading:
    """VLScope's layout on the chosen reading: marks cut off above or below a line joined to it, tokens of a
    script the text never mixes with dropped, vertical text in reading order with its ruby kept apart; and a
    vertical reading asked for on a horizontal page read as the horizontal page it is."""
    out = reading.out
    rtl = out.script in RTL_SCRIPTS
    lines = [ln for ln in out.lines if ln.text.strip()]
    vertical = out.vertical or (options.vertical == "auto" and looks_vertical(lines))
    if vertical and options.vertical == "on" and lines and vertical_share(lines) < 0.3:
        out.warnings.append("vertical reading was asked, but this page's text runs horizontally: it was read as "
                            "horizontal text")
        vertical = False
    if vertical and options.vertical != "off":
        vr = order_vertical(lines)
        out.lines, out.vertical = vr.lines, True
        reading.ruby = vr.ruby
        out.warnings.extend(vr.notes)
        return reading
    out.vertical = False
    lines = merge_mark_lines([OcrLine(ln.text, ln.box, ln.confidence, False) for ln in lines])
    cleaned = []
    for ln in lines:
        text = drop_foreign_tokens(strip_direction_marks(ln.text), out.script, options.lang).strip()
        if text:
            cleaned.append(OcrLine(text, ln.box, ln.confidence, ln.vertical))
    if out.engine == "rapidocr":
        cleaned = _tighten(cleaned, reading.pre.image)
    if out.engine == "rapidocr" or len(cleaned) != len(out.lines):
        cleaned = order_lines(cleaned, rtl=rtl)
    out.lines = cleaned
    return reading


def _tighten(lines: list[OcrLine], image: np.ndarray) -> list[OcrLine]:
    """Level line boxes shrunk to the ink inside them: RapidOCR's detector widens every box by a margin (its
    unclip ratio), so neighbouring words' boxes touch and table columns or field boxes run together."""
    import cv2

    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    H, W = gray.shape[:2]
    out = []
    for ln in lines:
        ay, by = ln.box[0][1], ln.box[1][1]
        x0, y0, x1, y1 = (int(round(v)) for v in ln.bounds)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
        if len(ln.box) != 4 or abs(by - ay) > 2 or x1 - x0 < 4 or y1 - y0 < 4:
            out.append(ln)
            continue
        crop = gray[y0:y1, x0:x1]
        _, ink = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
        if np.median(crop) < 110:  # light text on a dark ground
            ink = 255 - ink
        cols = np.flatnonzero(ink.any(axis=0))
        rows = np.flatnonzero(ink.any(axis=1))
        if len(cols) == 0 or len(rows) == 0 or ink.mean() > 0.6 * 255:
            out.append(ln)
            continue
        nx0, nx1 = x0 + int(cols[0]), x0 + int(cols[-1]) + 1
        ny0, ny1 = y0 + int(rows[0]), y0 + int(rows[-1]) + 1
        box = [[float(nx0), float(ny0)], [float(nx1), float(ny0)], [float(nx1), float(ny1)], [float(nx0), float(ny1)]]
        out.append(OcrLine(ln.text, box, ln.confidence, ln.vertical))
    return out


def ocr_page_image(page: PageImage, options: OcrOptions, engines: OcrRegistry | None = None) -> OcrPage:
    """Read one loaded page (using its PDF text layer when it has one and options allow)."""
    engines = _registry(None, engines)
    t0 = time.perf_counter()
    h, w = page.image.shape[:2]
    if page.text_layer is not None and options.use_text_layer:
        from core.ocr.scripts import detect_script

        lines = order_lines(page.text_layer)
        script = detect_script("".join(ln.text for ln in lines))
        result = OcrPage(page.index, w, h, lines, engine="pdf-text-layer", source="text-layer",
                         language=options.lang or script_language(script), script=script)
        result.warnings.append("this page has a real text layer: its text is used instead of OCR")
        result.warnings.extend(getattr(page, "warnings", None) or [])
        if options.tables:
            from core.ocr.tables import find_tables

            result.tables = find_tables(page.image, lines, page.index)
        result.seconds = round(time.perf_counter() - t0, 3)
        return result
    if mean_std(page.image)[1] < 2.0:
        return OcrPage(page.index, w, h, [], engine=options.engine, seconds=round(time.perf_counter() - t0, 3),
                       warnings=["blank page: no ink found, nothing to read"])
    stages: dict[str, float] = {}
    reading = _read_image(page.image, options, engines, timings=stages)
    out, pre = reading.out, reading.pre
    lines = [OcrLine(ln.text, pre.to_original(ln.box), ln.confidence, ln.vertical) for ln in out.lines]
    info = replace(pre.info, details={**pre.info.details, "reading": reading.candidate, "stage_seconds": stages})
    if out.variant and out.variant != "classified":
        info.details["variant"] = out.variant  # what tesseract needed to read the image (padded, raw-line, scaled)
    result = OcrPage(page.index, w, h, lines, engine=out.engine, source="ocr", language=out.language,
                     script=out.script, vertical=out.vertical, preprocess=info,
                     warnings=list(getattr(page, "warnings", None) or []) + list(dict.fromkeys(out.warnings)),
                     annotations=[_ruby_annotation(r, lines, pre) for r in reading.ruby])
    if not lines:
        result.warnings.append("no text found on this page (blank, too blurred or a script no installed engine "
                               "reads; try --enhanced or another --lang)")
    if options.tables and out.tables:
        # the engine rebuilt the tables itself (the model's HTML): their cells carry no boxes to find again
        result.tables = [replace(t, page=page.index) for t in out.tables]
    elif options.tables and lines and not out.vertical:
        from core.ocr.tables import find_tables, map_table

        t1 = time.perf_counter()
        tables = find_tables(pre.image, out.lines, page.index, reader=_cell_reader(options, engines))
        result.tables = [map_table(t, pre.to_original) for t in tables]
        stages["tables"] = round(time.perf_counter() - t1, 4)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _ruby_annotation(ruby: Ruby, lines: list[OcrLine], pre: Preprocessed) -> Annotation:
    """A ruby of the reading as the page's annotation: its box on the page, the line and characters it reads."""
    base = lines[ruby.base].text[ruby.start:ruby.end] if 0 <= ruby.base < len(lines) else ""
    return Annotation("ruby", ruby.text, pre.to_original(ruby.box), ruby.base, ruby.start, ruby.end, base,
                      ruby.confidence)


def _cell_reader(options: OcrOptions, engines: OcrRegistry):
    def read(crop: np.ndarray) -> str:
        opts = OcrOptions(engine=options.engine if options.engine != "vlm" else "auto", lang=options.lang)
        layout = analyse_layout(crop)
        img, _m, _did = pad_small(crop, layout)
        try:
            eng = choose_engine(opts, engines)
            out = _tess_read(eng, img, options.lang, False, layout) if isinstance(eng, TesseractEngine) \
                else eng.read(img, options.lang, False)
        except OcrError:
            return ""
        return " ".join(strip_direction_marks(ln.text) for ln in out.lines)

    return read


def _engine_versions(options: OcrOptions, engines: OcrRegistry) -> str:
    names = ["rapidocr", "tesseract"] if options.engine == "auto" else [options.engine]
    return ";".join(engines.version(n) for n in names)


def run_ocr(source: str | Path | bytes, options: OcrOptions | None = None, *, name: str | None = None,
            settings: Settings | None = None, cache=None, engines: OcrRegistry | None = None,
            progress: Progress | None = None, cancel: CancelToken | None = None) -> OcrResult:
    """OCR a PDF or image file (path or bytes): pages -> lines, tables and invoice fields.

    progress(fraction, message, "ocr") is called per page; setting `cancel` stops after the
    current page (the pages read so far are returned and, with a cache, kept). `engines` (an
    OcrRegistry) reads the pages: the application's, whose `vlm` entry is its one model engine.
    Raises OcrError on bad input with a message naming the cause and the fix.

    The run holds the memory its largest page needs (header sizes, see core.ocr.loading.ocr_bytes)
    from the process-wide heavy-work bound; when other work holds it longer than `busy_timeout_s`,
    raises OcrBusy ("the server is busy ... try again").
    """
    from core.cache import hash_bytes, make_key

    options = options or OcrOptions()
    settings = _settings(settings, engines)
    engines = _registry(settings, engines)
    max_pixels = settings.max_image_pixels
    data = _read_source(source)
    if name is None:
        name = Path(source).name if isinstance(source, (str, Path)) else "upload"
    input_hash = hash_bytes(data)
    t0 = time.perf_counter()
    total_pages = count_pages(data)
    from core.ocr.loading import parse_pages

    wanted = parse_pages(options.pages, total_pages)
    if len(wanted) > options.max_pages:
        raise OcrError(f"{len(wanted)} of {total_pages} pages are selected, above the limit of {options.max_pages}; "
                       "choose a page range (e.g. --pages 1-50) or raise the page limit")
    result = OcrResult(name, input_hash, [], total_pages, options.to_dict())
    versions = _engine_versions(options, engines) if cache is not None else ""
    params = options.page_key_params()
    pending = []
    for idx in wanted:
        key = make_key(input_hash, RESULT_STAGE, {**params, "page": idx}, model=versions) if cache else None
        cached = cache.get_json(key) if cache is not None else None
        if cached is not None:
            result.pages.append(OcrPage.from_dict(cached))
        else:
            pending.append((idx, key))
    if pending:
        spec = ",".join(str(i + 1) for i, _ in pending)
        keys = dict(pending)
        largest = min(max(page_pixels(data, [i for i, _ in pending], options.dpi)), max_pixels)
        with heavy(ocr_bytes(largest, is_pdf(data), _reading_bytes_per_pixel(options)), f"OCR of {name}", settings):
            if progress:
                progress(0.0, f"reading {len(wanted)} page(s) of {name}", "ocr")
            for page in iter_pages(data, spec, options.dpi, max_pixels, options.max_pages, options.use_text_layer,
                                   settings):
                if cancel is not None and cancel.is_set():
                    result.warnings.append("cancelled: only the pages read before cancelling are included")
                    break
                page_result = ocr_page_image(page, options, engines)
                if cache is not None:
                    cache.put_json(keys[page.index], page_result.to_dict())
                result.pages.append(page_result)
                del page
                if progress:
                    progress(len(result.pages) / max(1, len(wanted)), f"page {page_result.index + 1} of {len(wanted)}: "
                             f"{len(page_result.lines)} lines ({page_result.source}, {page_result.engine})", "ocr")
    else:
        if progress:
            progress(1.0, "all pages from the cache", "ocr")
    result.pages.sort(key=lambda p: p.index)
    if options.fields != "off":
        from core.ocr.fields_model import fields_for_result
        from core.ocr.invoice import extract_fields, looks_like_invoice

        if options.fields == "on" or looks_like_invoice(result.text):
            # with the model asked for, Qwen3-VL fills the schema and the rules fill what it left empty
            result.fields = fields_for_result(result, engines) if options.engine == "vlm" else extract_fields(result)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _reading_bytes_per_pixel(options: OcrOptions) -> float:
    """Memory reading needs per pixel it works on: enhanced mode keeps a second preprocessed variant."""
    from core.ocr.loading import OCR_BYTES_PER_PIXEL

    return OCR_BYTES_PER_PIXEL * (2 if options.enhanced else 1)


def ocr_image(image: np.ndarray, options: OcrOptions | None = None, settings: Settings | None = None,
              engines: OcrRegistry | None = None) -> OcrPage:
    """OCR one RGB image array; returns its page (boxes in the image's pixels)."""
    from core.ocr.loading import load_image

    options = options or OcrOptions()
    settings = _settings(settings, engines)
    max_pixels = settings.max_image_pixels
    pixels = int(image.shape[0]) * int(image.shape[1]) if image.ndim >= 2 else 0
    with heavy(ocr_bytes(min(pixels, max_pixels), per_pixel=_reading_bytes_per_pixel(options)), "OCR of the image",
               settings):
        rgb = load_image(image, max_pixels, settings)
        return ocr_page_image(PageImage(0, rgb), options, _registry(settings, engines))


def preview_preprocessing(source: str | Path | bytes | np.ndarray, options: OcrOptions | None = None,
                          page: int = 1, settings: Settings | None = None,
                          engines: OcrRegistry | None = None) -> list[StepRecord]:
    """Every preprocessing step on one page (1-based) with before/after images, for display."""
    from core.ocr.loading import load_image

    options = options or OcrOptions()
    settings = _settings(settings, engines)
    max_pixels = settings.max_image_pixels
    if isinstance(source, np.ndarray):
        pixels, pdf = int(source.shape[0]) * int(source.shape[1]), False
    else:
        from core.ocr.loading import parse_pages

        data = _read_source(source)
        [index] = parse_pages(str(page), count_pages(data))
        pixels, pdf, source = page_pixels(data, [index], options.dpi)[0], is_pdf(data), data
    # every applied step keeps a before/after copy for display: ~3 bytes a pixel for each of up to 8 steps
    with heavy(ocr_bytes(min(pixels, max_pixels), pdf, per_pixel=PREVIEW_BYTES_PER_PIXEL), "the preprocessing preview",
               settings):
        if isinstance(source, np.ndarray):
            img = load_image(source, max_pixels, settings)
        else:
            img = next(iter_pages(source, str(page), options.dpi, max_pixels, 1, False, settings)).image
        return preprocess(img, options.preprocess, _orientation_fn(options, {}, _registry(settings, engines)),
                          keep_images=True).steps
