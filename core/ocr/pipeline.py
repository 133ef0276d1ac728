"""The OCR pipeline: load pages, preprocess, choose an engine, read, rebuild tables, read invoice fields.

`run_ocr(source, options, settings=..., cache=..., engines=..., progress=...)` reads a document (the
application layer, core.app.documents, calls it with the runtime's settings, cache and OCR engines).
With a cache it stores every page as it is read (content hash + options + engine version), so a
re-run or a resumed run is instant and a crash loses nothing already computed. Without settings it
uses the defaults (`Settings()`); without `engines`, a registry of the CPU engines only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.ocr.base import EngineOutput, OcrEngine
from core.ocr.engines import RapidOcrEngine, TesseractEngine, script_from_osd
from core.events import CancelToken, Progress
from core.ocr.loading import (DEFAULT_MAX_PAGES, PageImage, _read_source, count_pages, heavy, is_pdf,
                               iter_pages, ocr_bytes, page_pixels)
from core.ocr.preprocess import Preprocessed, PreprocessOptions, StepRecord, mean_std, preprocess
from core.ocr.scripts import (LANGUAGES, RTL_SCRIPTS, detect_script, normalise_lang, order_lines, rapidocr_reads,
                              script_language)
from core.ocr.registry import OcrRegistry
from core.ocr.types import ENGINE_NAMES, jsonable, OcrError, OcrLine, OcrPage, OcrResult, PreprocessInfo
from core.settings import Settings

log = logging.getLogger(__name__)

RESULT_STAGE = "ocr-page"
PIPELINE_VERSION = "2"  # 2: sparse pages (one line on a white page) are read, no longer stretched to black
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


def _score(out: EngineOutput) -> float:
    chars = sum(len(ln.text) for ln in out.lines)
    return out.mean_confidence * min(1.0, chars / 8.0)


def _read_auto(image: np.ndarray, options: OcrOptions, vertical: bool | None, engines: OcrRegistry) -> EngineOutput:
    """Auto choice: by hint, else RapidOCR first and Tesseract when the script is one RapidOCR cannot read."""
    lang = options.lang
    if options.engine == "vlm":
        from core.ocr.vlm import VlmOcrEngine

        eng = engines.get("vlm")
        if isinstance(eng, VlmOcrEngine):
            return eng.read(image, lang, vertical, mode=options.vlm_mode)
        return eng.read(image, lang, vertical)
    if options.engine != "auto":
        return engines.get(options.engine).read(image, lang, vertical)
    if _tesseract_only(lang):
        return engines.get("tesseract").read(image, lang, vertical)
    rapid = engines.get("rapidocr")
    out = rapid.read(image, lang, vertical)
    # confident and more than a stray mark (RapidOCR reads Cyrillic, for one, as a few dots)
    read = sum(2 if detect_script(ch) in ("Han", "Japanese", "Hangul") else 1 for ln in out.lines for ch in ln.text
               if ch.isalnum())
    if lang or (out.lines and out.mean_confidence >= 0.85 and read >= 4):
        if not out.language:
            out.language = script_language(out.script)
        return out
    # low confidence without a hint: ask tesseract which script this is
    try:
        tess = engines.get("tesseract")
    except OcrError:
        tess = None
    if not isinstance(tess, TesseractEngine):
        out.warnings.append("text may be in a script RapidOCR cannot read; install tesseract-ocr for more scripts")
        return out
    hint = script_from_osd(tess, image)
    candidates: list[EngineOutput] = [out]
    try:
        if hint and _tesseract_only(hint):
            candidates.append(tess.read(image, hint, vertical))
        elif hint is None:
            packs = [LANGUAGES[k][2] for k in ("ar", "hi") if LANGUAGES[k][2] in tess.languages() or
                     k in tess.languages()]
            if packs:
                t = tess.read(image, None, False, pack="+".join(packs))
                if t.script in ("Arabic", "Devanagari"):
                    candidates.append(t)
    except OcrError as exc:
        out.warnings.append(str(exc))
    best = max(candidates, key=_score)
    if best is not out and best.script:
        best.language = script_language(best.script)
        best.lines = order_lines(best.lines, rtl=best.script in RTL_SCRIPTS, vertical=best.vertical)
    elif not best.language:
        best.language = script_language(best.script)
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


def _read_image(image: np.ndarray, options: OcrOptions, engines: OcrRegistry,
                keep_images: bool = False) -> tuple[EngineOutput, Preprocessed]:
    state: dict[str, Any] = {}
    pre = preprocess(image, options.preprocess, _orientation_fn(options, state, engines), keep_images=keep_images)
    vertical: bool | None = {"on": True, "off": False}.get(options.vertical)
    if vertical is None and state.get("vertical"):
        vertical = True
    out = _read_auto(pre.image, options, vertical, engines)
    if not options.enhanced:
        return out, pre
    # enhanced mode: try other orientations and an upscaled copy; keep the most confident reading
    best, best_pre = out, pre
    variants: list[PreprocessOptions] = []
    base = options.preprocess
    if base.upscale != "on":
        variants.append(PreprocessOptions(**{**base.to_dict(), "upscale": "on"}))
    if base.contrast != "on":
        variants.append(PreprocessOptions(**{**base.to_dict(), "contrast": "on", "denoise": "on"}))
    for variant in variants:
        if _score(best) >= 0.97:
            break  # a reading this confident is not beaten by another variant: save the time
        p2 = preprocess(image, variant, _orientation_fn(options, {}, engines), keep_images=keep_images)
        o2 = _read_auto(p2.image, options, vertical, engines)
        if _score(o2) > _score(best) + 0.005:
            best, best_pre = o2, p2
    if options.vertical != "on" and not best.vertical and _score(best) < 0.97:
        from core.ocr.preprocess import rotate90

        for turn in (90, 180, 270):
            rotated, m = rotate90(best_pre.image, turn)
            o3 = _read_auto(rotated, options, vertical, engines)
            if _score(o3) > _score(best) + 0.02:
                info = PreprocessInfo(list(best_pre.info.steps) + ["orientation"],
                                      (best_pre.info.orientation + turn) % 360, best_pre.info.skew,
                                      dict(best_pre.info.details))
                best, best_pre = o3, Preprocessed(rotated, m @ best_pre.matrix, info,
                                                  best_pre.steps + [StepRecord("orientation", True,
                                                                               f"enhanced: turned {turn} more")])
    return best, best_pre


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
        if options.tables:
            from core.ocr.tables import find_tables

            result.tables = find_tables(page.image, lines, page.index)
        result.seconds = round(time.perf_counter() - t0, 3)
        return result
    if mean_std(page.image)[1] < 2.0:
        return OcrPage(page.index, w, h, [], engine=options.engine, seconds=round(time.perf_counter() - t0, 3),
                       warnings=["blank page: no ink found, nothing to read"])
    out, pre = _read_image(page.image, options, engines)
    lines = [OcrLine(ln.text, pre.to_original(ln.box), ln.confidence, ln.vertical) for ln in out.lines]
    result = OcrPage(page.index, w, h, lines, engine=out.engine, source="ocr", language=out.language,
                     script=out.script, vertical=out.vertical, preprocess=pre.info, warnings=list(out.warnings))
    if not lines:
        result.warnings.append("no text found on this page (blank, too blurred or a script no installed engine "
                               "reads; try --enhanced or another --lang)")
    if options.tables and out.tables:
        # the engine rebuilt the tables itself (the model's HTML): their cells carry no boxes to find again
        result.tables = [replace(t, page=page.index) for t in out.tables]
    elif options.tables and lines and not out.vertical:
        from core.ocr.tables import find_tables, map_table

        tables = find_tables(pre.image, out.lines, page.index, reader=_cell_reader(options, engines))
        result.tables = [map_table(t, pre.to_original) for t in tables]
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _cell_reader(options: OcrOptions, engines: OcrRegistry):
    def read(crop: np.ndarray) -> str:
        opts = OcrOptions(engine=options.engine if options.engine != "vlm" else "auto", lang=options.lang)
        try:
            out = choose_engine(opts, engines).read(crop, options.lang, False)
        except OcrError:
            return ""
        return " ".join(ln.text for ln in out.lines)

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
        from core.ocr.invoice import extract_fields, looks_like_invoice

        if options.fields == "on" or looks_like_invoice(result.text):
            result.fields = extract_fields(result)
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
