"""Document loading: images (PNG, JPEG, TIFF multi-page, WebP, BMP, GIF) and PDFs page by page.

Pages are produced one at a time (bounded memory). PDF pages with a real text layer carry
their text lines and words (core.ocr.textlayer: characters joined by their positions, the page's
rotation applied) so OCR can be skipped for them; a garbage layer is dropped and the page says why.

Decoding a page, and reading it, holds the memory it is expected to need from the process-wide
heavy-work bound (`heavy`, core.limits): the size comes from the file's header before anything is
decoded, so large pages wait their turn (or are refused as busy) instead of exhausting the RAM.
"""

from __future__ import annotations

import io
import threading
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import ExifTags, Image, ImageOps, ImageSequence, UnidentifiedImageError

from core.errors import Busy
from core.ocr.types import OcrBusy, OcrError, OcrLine

DEFAULT_MAX_PAGES = 300
MIN_SIDE = 8
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".jfif", ".pbm", ".pgm", ".ppm"}

"""progress(done, total, message): called as pages are handled."""

# Memory per pixel, measured as peak RSS above the start (psutil, sampled every 2 ms) on 6-179 Mpx PNGs
# and a 35 Mpx PDF page: decoding an image peaks at ~10 bytes a pixel (Pillow's raster, its bytes and
# the RGB array), rendering a PDF page at ~13. The page then stays as a 3-byte RGB array while OCR works
# on a copy of at most MAX_OCR_PIXELS at ~6-8 bytes a pixel, plus the engine's own working memory
# (RapidOCR's detector at 1280 pixels a side: ~150-250 MB whatever the page size).
IMAGE_LOAD_BYTES_PER_PIXEL = 10
PDF_LOAD_BYTES_PER_PIXEL = 13
PAGE_BYTES_PER_PIXEL = 3
OCR_BYTES_PER_PIXEL = 8
OCR_ENGINE_BYTES = 256 * 1024**2


def load_bytes(pixels: int, pdf: bool = False) -> int:
    """Peak memory of decoding an image page (or rendering a PDF page) of `pixels` pixels."""
    return int(pixels * (PDF_LOAD_BYTES_PER_PIXEL if pdf else IMAGE_LOAD_BYTES_PER_PIXEL))


def ocr_bytes(pixels: int, pdf: bool = False, per_pixel: float = OCR_BYTES_PER_PIXEL) -> int:
    """Peak memory of loading and reading one page of `pixels` pixels (decoding ends before reading starts);
    `per_pixel` is what reading needs per pixel it works on (more when variants or step images are kept)."""
    from core.ocr.preprocess import MAX_OCR_PIXELS

    reading = PAGE_BYTES_PER_PIXEL * pixels + per_pixel * min(pixels, MAX_OCR_PIXELS) + OCR_ENGINE_BYTES
    return int(max(load_bytes(pixels, pdf), reading))


_held = threading.local()


@contextmanager
def heavy(nbytes: int, what: str, settings: Any = None) -> Iterator[None]:
    """Hold `nbytes` of the process's heavy-work memory (core.limits) while the block runs.

    A hold inside a hold of the same thread costs nothing more (the outer estimate covers it). When
    other work holds the memory for longer than `busy_timeout_s`, raises OcrBusy ("the server is busy").
    The bound is built once per process from the first caller's settings (the defaults when it gave none).
    """
    if getattr(_held, "depth", 0):
        yield
        return
    from core.limits import heavy_work

    with ExitStack() as stack:
        try:
            stack.enter_context(heavy_work(settings).hold(nbytes, what))
        except Busy as exc:
            raise OcrBusy(exc.cause, exc.fix) from exc
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0


@dataclass
class PageImage:
    """One page to read: its RGB pixels and, for PDF pages with a text layer, the text lines (and words)
    found there; `warnings` are for the user (a text layer rejected as garbage, a page turned to read it)."""

    index: int
    image: np.ndarray  # HxWx3 uint8 RGB
    text_layer: list[OcrLine] | None = None
    dpi: float = 72.0
    warnings: list[str] = field(default_factory=list)
    text_words: list[OcrLine] | None = None
    layer_stats: dict[str, Any] | None = None  # text-layer quality (core.ocr.textlayer.TextLayer.stats)


def parse_pages(spec: str | None, count: int) -> list[int]:
    """0-based page indices from a 1-based spec like "1-3,5,8-" (None or "" or "all" = every page)."""
    if spec is None or not str(spec).strip() or str(spec).strip().lower() == "all":
        return list(range(count))
    out: list[int] = []
    for part in str(spec).replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                start = int(a) if a else 1
                end = int(b) if b else count
            else:
                start = end = int(part)
        except ValueError as exc:
            raise OcrError(f"page range {spec!r} is not understood; write e.g. 1-3,5 (pages count from 1)") from exc
        if start < 1 or end < start:
            raise OcrError(f"page range {part!r} is empty or starts before page 1; write e.g. 1-3")
        if start > count:
            raise OcrError(f"page range {part!r} starts after the last page ({count} pages); choose pages 1-{count}")
        out.extend(i - 1 for i in range(start, min(end, count) + 1) if i - 1 not in out)
    if not out:
        raise OcrError(f"page range {spec!r} selects no page; the document has {count} pages")
    return out


def _read_source(source: str | Path | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    if not path.exists():
        raise OcrError(f"file {path} does not exist; check the path")
    if path.is_dir():
        raise OcrError(f"{path} is a folder; give one image or PDF file")
    return path.read_bytes()


def is_pdf(data: bytes) -> bool:
    """True when the bytes start like a PDF file."""
    return data[:1024].lstrip().startswith(b"%PDF") or b"%PDF-" in data[:1024]


def _to_rgb(frame: Image.Image) -> np.ndarray:
    frame.load()
    if frame.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        frame = ImageOps.exif_transpose(frame)
    if frame.mode == "RGB":
        return np.array(frame)  # no converted copy of the decoded raster
    if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
        rgba = frame.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        frame = Image.alpha_composite(white, rgba)
    elif frame.mode == "I;16" or frame.mode == "I":
        arr = np.asarray(frame, dtype=np.float64)
        span = max(arr.max() - arr.min(), 1)
        frame = Image.fromarray(((arr - arr.min()) * 255 / span).astype(np.uint8))
    return np.array(frame.convert("RGB"))


def _check_size(w: int, h: int, max_pixels: int, what: str) -> None:
    if w * h > max_pixels:
        raise OcrError(
            f"{what} is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} (decompression-bomb guard); "
            "shrink the image or raise VLSCOPE_MAX_IMAGE_PIXELS if you trust the file"
        )
    if w < MIN_SIDE or h < MIN_SIDE:
        raise OcrError(f"{what} is only {w}x{h} pixels, too small to hold readable text; give an image at least "
                       f"{MIN_SIDE}x{MIN_SIDE} pixels (ideally text 20+ pixels high)")


def page_pixels(data: bytes, indices: list[int], dpi: float = 200) -> list[int]:
    """Pixels of each page in `indices` (0-based; PDF pages rendered at `dpi`), from the headers only."""
    if is_pdf(data):
        pdf = _open_pdf(data)
        try:
            n, scale = len(pdf), dpi / 72.0
            if any(not 0 <= i < n for i in indices):
                raise OcrError(f"page {max(indices) + 1} is past the PDF's last page ({n}); choose pages 1-{n}")
            sizes = [pdf.get_page_size(i) for i in indices]
            return [int(round(w * scale)) * int(round(h * scale)) for w, h in sizes]
        finally:
            pdf.close()
    with _open_image(data) as im:
        n = getattr(im, "n_frames", 1)
        if any(not 0 <= i < n for i in indices):
            raise OcrError(f"page {max(indices) + 1} is past the image's last page ({n}); choose pages 1-{n}")
        out = []
        for i in indices:
            try:
                if i:
                    im.seek(i)
            except (EOFError, OSError, ValueError) as exc:
                raise OcrError(f"page {i + 1} of the image could not be read ({exc}); the file is damaged or "
                               "truncated: re-export it") from exc
            out.append(im.width * im.height)
        return out


def count_pages(source: str | Path | bytes) -> int:
    """Number of pages (PDF pages or image frames) in the source."""
    data = _read_source(source)
    if is_pdf(data):
        pdf = _open_pdf(data)
        try:
            return len(pdf)
        finally:
            pdf.close()
    with _open_image(data) as im:
        return getattr(im, "n_frames", 1)


def _open_image(data: bytes) -> Image.Image:
    if not data:
        raise OcrError("the file is empty (0 bytes); give an image or PDF file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, against our own setting
            try:
                return Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = old
    except UnidentifiedImageError as exc:
        raise OcrError("the file is neither a PDF nor an image format that can be read (PNG, JPEG, TIFF, WebP, "
                       "BMP, GIF); check that it is not damaged or convert it") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise OcrError(f"the image could not be opened ({exc}); it may be damaged: re-export or convert it") from exc


def iter_image_pages(data: bytes, pages: str | None, max_pixels: int, max_pages: int,
                     settings: Any = None) -> Iterator[PageImage]:
    """Frames of an image file (several for multi-page TIFF) as RGB pages."""
    im = _open_image(data)
    with im:
        n = getattr(im, "n_frames", 1)
        wanted = parse_pages(pages, n)
        if len(wanted) > max_pages:
            raise OcrError(f"{len(wanted)} pages selected, above the limit of {max_pages}; choose a page range "
                           "(e.g. --pages 1-50) or raise the page limit")
        last = max(wanted)
        for i, frame in enumerate(ImageSequence.Iterator(im)):
            if i not in wanted:
                continue
            _check_size(frame.width, frame.height, max_pixels, f"page {i + 1} of the image")
            try:
                with heavy(load_bytes(frame.width * frame.height), f"decoding page {i + 1} of the image", settings):
                    rgb = _to_rgb(frame)
            except OcrError:
                raise
            except (OSError, ValueError, SyntaxError) as exc:
                raise OcrError(f"page {i + 1} of the image could not be decoded ({exc}); the file is damaged or "
                               "truncated: re-export it") from exc
            dpi = float((frame.info.get("dpi") or (0, 0))[0] or 0) or 72.0
            if i == last:
                im.close()  # frees the decoded raster while the page is being read
                yield PageImage(i, rgb, None, dpi)
                return
            yield PageImage(i, rgb, None, dpi)


def _declares_no_pages(data: bytes) -> bool:
    """True when the PDF's page tree says it has no pages and no page object exists (read from the bytes)."""
    import re

    empty_tree = re.search(rb"/Type\s*/Pages\b", data) and re.search(rb"/Count\s+0\b", data)
    return bool(empty_tree) and re.search(rb"/Type\s*/Page(?![A-Za-z])", data) is None


def _open_pdf(data: bytes):
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        msg = str(exc).lower()
        if getattr(exc, "err_code", None) == 0 or "success" in msg or _declares_no_pages(data):
            # PDFium refuses a document whose page tree is empty, reporting "Success" as the error (or whatever
            # error an earlier call left behind: its last-error value is process-wide)
            raise OcrError("the PDF has no pages (its page list is empty); export it again from the program "
                           "that made it, with at least one page, or check that this is the right file") from exc
        if "password" in msg or "security" in msg:
            raise OcrError("the PDF is encrypted (password protected); remove the password (e.g. `qpdf --decrypt "
                           "--password=... in.pdf out.pdf`) and try again") from exc
        raise OcrError(f"the PDF could not be opened ({exc}); it is damaged or not really a PDF: repair it "
                       "(e.g. `qpdf in.pdf out.pdf`) or export it again") from exc


def _text_layer_lines(page, scale: float, height_pt: float | None = None) -> list[OcrLine]:
    """The page's text-layer lines in rendered pixels at `scale` (core.ocr.textlayer; `height_pt` is unused,
    kept for old callers: the page's own geometry and rotation are read from PDFium)."""
    from core.ocr.textlayer import read_layer

    return read_layer(page, scale).lines


def has_text_layer(lines: list[OcrLine]) -> bool:
    """True when text-layer lines hold enough real text to use instead of OCR."""
    chars = sum(len(ln.text.strip()) for ln in lines)
    return chars >= 10


def _page_layer(page, scale: float):
    """(text layer, warnings) of one PDF page, in the pixels of the page as rendered (its /Rotate applied).

    Text drawn turned on the page (a landscape table on a portrait page) keeps its direction: each line's
    polygon starts at the text's own top-left corner, and the page says that its text runs turned."""
    from core.ocr.textlayer import read_layer

    try:
        layer = read_layer(page, scale)
    except Exception as exc:  # noqa: BLE001 - a text layer PDFium cannot read: OCR the page instead
        return None, [f"this page's PDF text layer could not be read ({exc}): the page was read with OCR instead"]
    notes: list[str] = []
    if layer.usable and layer.turn:
        notes.append(f"most text on this page runs turned by {layer.turn} degrees clockwise; its lines keep "
                     "that direction (each line's box starts at the text's top-left corner)")
    if layer.warning:
        notes.append(layer.warning)
    return layer, notes


def iter_pdf_pages(data: bytes, pages: str | None, dpi: float, max_pixels: int, max_pages: int,
                   use_text_layer: bool = True, settings: Any = None) -> Iterator[PageImage]:
    """PDF pages rendered at `dpi`, with their text layer lines when the page has one."""
    pdf = _open_pdf(data)
    try:
        n = len(pdf)
        if n == 0:
            raise OcrError("the PDF has no pages (its page list is empty); export it again from the program "
                           "that made it, with at least one page, or check that this is the right file")
        wanted = parse_pages(pages, n)
        if len(wanted) > max_pages:
            raise OcrError(f"{len(wanted)} of the PDF's {n} pages are selected, above the limit of {max_pages}; "
                           "choose a page range (e.g. --pages 1-50) or raise the page limit")
        scale = dpi / 72.0
        for i in wanted:
            try:
                page = pdf[i]
            except Exception as exc:  # noqa: BLE001 - pdfium raises various errors for a broken page
                raise OcrError(f"page {i + 1} of the PDF could not be read ({exc}); repair the PDF") from exc
            try:
                w_pt, h_pt = page.get_size()
                w, h = int(round(w_pt * scale)), int(round(h_pt * scale))
                if w * h > max_pixels:
                    raise OcrError(f"page {i + 1} rendered at {dpi:g} DPI would be {w}x{h} pixels, above the limit "
                                   f"of {max_pixels:,}; choose a lower DPI")
                layer, notes = _page_layer(page, scale) if use_text_layer else (None, [])
                with heavy(load_bytes(w * h, pdf=True), f"rendering page {i + 1} of the PDF", settings):
                    bitmap = page.render(scale=scale)
                    pil = bitmap.to_pil()
                    rgb = np.array(pil if pil.mode == "RGB" else pil.convert("RGB"))
                    del pil
                    bitmap.close()
            finally:
                page.close()
            if layer is not None and layer.usable and has_text_layer(layer.lines):
                yield PageImage(i, rgb, layer.lines, dpi, notes, layer.words, layer.stats())
            else:
                yield PageImage(i, rgb, None, dpi, notes, None, layer.stats() if layer is not None else None)
    finally:
        pdf.close()


def iter_pages(source: str | Path | bytes, pages: str | None = None, dpi: float = 200, max_pixels: int = 178_956_970,
               max_pages: int = DEFAULT_MAX_PAGES, use_text_layer: bool = True,
               settings: Any = None) -> Iterator[PageImage]:
    """Every selected page of a PDF or image, one at a time (raises OcrError on bad input, OcrBusy when
    the memory to decode a page stays held by other work)."""
    data = _read_source(source)
    if is_pdf(data):
        yield from iter_pdf_pages(data, pages, dpi, max_pixels, max_pages, use_text_layer, settings)
    else:
        yield from iter_image_pages(data, pages, max_pixels, max_pages, settings)


def load_image(source: str | Path | bytes | np.ndarray | Image.Image, max_pixels: int = 178_956_970,
               settings: Any = None) -> np.ndarray:
    """One RGB image (the first page of a file) as an HxWx3 uint8 array."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise OcrError(f"an image array must be HxW or HxWx3, not {arr.shape}")
        _check_size(arr.shape[1], arr.shape[0], max_pixels, "the image")
        return np.ascontiguousarray(arr[:, :, :3]).astype(np.uint8)
    if isinstance(source, Image.Image):
        _check_size(source.width, source.height, max_pixels, "the image")
        with heavy(load_bytes(source.width * source.height), "decoding the image", settings):
            return _to_rgb(source)
    for page in iter_pages(source, "1", max_pixels=max_pixels, max_pages=1, settings=settings):
        return page.image
    raise OcrError("the file holds no page")
