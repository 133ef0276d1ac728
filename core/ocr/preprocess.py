"""OpenCV preprocessing: EXIF orientation (done at load), 90/180/270 orientation, deskew up to 45 degrees,
denoise, contrast (CLAHE), gamma for dark photos, binarisation, upscale, and a downscale of huge images
(above MAX_OCR_PIXELS). Each step is switchable and can keep before/after images for display.

Statistics are taken without full-size float copies (OpenCV's meanStdDev, histograms, lookup tables),
so the memory preprocessing needs stays a few bytes per pixel (see core.ocr.loading.ocr_bytes).

Every geometric step updates a 3x3 matrix mapping original pixels to processed pixels, so line
boxes found on the processed image can be mapped back onto the original page.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

import cv2
import numpy as np

from core.ocr.types import OcrError, PreprocessInfo

Switch = Literal["auto", "on", "off"]

MAX_OCR_PIXELS = 40_000_000
"""Larger images are shrunk to this many pixels before preprocessing and reading (A4 at 540 DPI). The text
detector works at 1280 pixels a side anyway, so text it can find on a larger page is still 50+ pixels high
here; every later stage then needs memory for at most this many pixels."""


@dataclass
class PreprocessOptions:
    """Which preprocessing steps run: "auto" runs a step only when the image needs it."""

    orientation: Switch = "auto"  # 90/180/270 detection and correction
    deskew: Switch = "auto"  # small and large tilts, up to 45 degrees
    denoise: Switch = "auto"
    contrast: Switch = "auto"  # CLAHE on low-contrast images
    gamma: Switch = "auto"  # brighten dark photos
    binarize: Switch = "off"  # adaptive threshold (rarely helps neural OCR)
    upscale: Switch = "auto"  # enlarge small images

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PreprocessOptions":
        """Options from a dict, refusing unknown names or values."""
        opts = cls()
        for key, value in (d or {}).items():
            if not hasattr(opts, key):
                raise OcrError(f"unknown preprocessing step {key!r}; steps are {', '.join(asdict(opts))}")
            if isinstance(value, bool):
                value = "on" if value else "off"
            if value not in ("auto", "on", "off"):
                raise OcrError(f"preprocessing step {key} must be auto, on or off, not {value!r}")
            setattr(opts, key, value)
        return opts


@dataclass
class StepRecord:
    """One preprocessing step: whether it changed the image, why, and (optionally) before/after images."""

    name: str
    applied: bool
    detail: str
    before: np.ndarray | None = field(default=None, repr=False)
    after: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Preprocessed:
    """The processed image, the matrix original->processed pixels, and the record of every step."""

    image: np.ndarray
    matrix: np.ndarray
    info: PreprocessInfo
    steps: list[StepRecord]

    def to_original(self, box: list[list[float]]) -> list[list[float]]:
        """Map a polygon from processed-image pixels back to original-page pixels."""
        inv = np.linalg.inv(self.matrix)
        pts = np.hstack([np.asarray(box, dtype=np.float64), np.ones((len(box), 1))]) @ inv.T
        return [[round(float(x), 1), round(float(y), 1)] for x, y in pts[:, :2]]


def to_gray(img: np.ndarray) -> np.ndarray:
    """A single-channel uint8 copy of an RGB or gray image."""
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def mean_std(img: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of all values of a uint8 image (no float copy of the image)."""
    flat = np.ascontiguousarray(img).reshape(img.shape[0], -1)
    mean, std = cv2.meanStdDev(flat)
    return float(mean[0, 0]), float(std[0, 0])


def gray_percentiles(gray: np.ndarray, *qs: float) -> list[float]:
    """Percentiles (0-100) of a uint8 gray image, from its histogram."""
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    cdf = np.cumsum(hist) / max(float(hist.sum()), 1.0)
    return [float(min(255, np.searchsorted(cdf, q / 100.0, side="left"))) for q in qs]


def stretch_bounds(gray: np.ndarray) -> tuple[float, float]:
    """Levels to stretch to 0..255: the 0.5th and 99.5th percentiles, except that a bound falling on the
    paper itself (a sparse page: under 0.5 % of pixels are ink) is replaced by the darkest (or lightest)
    level, so one line of text on a white page is kept instead of turning the page black."""
    lo, med, hi = gray_percentiles(gray, 0.5, 50, 99.5)
    if lo >= med - 8:
        lo = float(gray.min())
    if hi <= med + 8:
        hi = float(gray.max())
    return lo, hi


def stretch_levels(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map level `lo` to 0 and `hi` to 255 (clipped), through a lookup table; a copy when lo == hi
    (a uniform image has no range to stretch)."""
    if hi - lo < 1:
        return img.copy()
    table = np.clip((np.arange(256, dtype=np.float32) - lo) * 255.0 / max(hi - lo, 1.0), 0, 255).astype(np.uint8)
    return cv2.LUT(img, table)


def _affine3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0, 0, 1]])


def rotate_bound(img: np.ndarray, angle: float, border: tuple[int, int, int] | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rotate counter-clockwise by `angle` degrees, enlarging the canvas; returns (image, 3x3 matrix)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(math.ceil(h * sin + w * cos)), int(math.ceil(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    if border is None:
        border = _border_value(img)
    out = cv2.warpAffine(img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=border)
    return out, _affine3(m)


def _border_value(img: np.ndarray) -> Any:
    edge = np.concatenate([img[0].reshape(-1, img.shape[2] if img.ndim == 3 else 1),
                           img[-1].reshape(-1, img.shape[2] if img.ndim == 3 else 1)])
    med = np.median(edge, axis=0)
    return tuple(int(v) for v in med) if img.ndim == 3 else int(med[0])


def rotate90(img: np.ndarray, degrees_cw: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn the image clockwise by 0/90/180/270 degrees; returns (image, 3x3 matrix)."""
    h, w = img.shape[:2]
    k = (degrees_cw // 90) % 4
    if k == 0:
        return img, np.eye(3)
    if k == 1:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE), np.array([[0, -1, h - 1], [1, 0, 0], [0, 0, 1]], float)
    if k == 2:
        return cv2.rotate(img, cv2.ROTATE_180), np.array([[-1, 0, w - 1], [0, -1, h - 1], [0, 0, 1]], float)
    return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE), np.array([[0, 1, 0], [-1, 0, w - 1], [0, 0, 1]], float)


def text_mask(gray: np.ndarray) -> np.ndarray:
    """Binary mask (255 = ink) of dark-on-light or light-on-dark text."""
    blur = cv2.medianBlur(gray, 3)
    if np.median(blur) < 110:  # light text on a dark background
        blur = 255 - blur
    block = max(15, (min(gray.shape[:2]) // 20) | 1)
    return cv2.adaptiveThreshold(blur, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 15)


def _profile_score(mask: np.ndarray, angle: float) -> float:
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    rot = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    rows = rot.sum(axis=1, dtype=np.float64)
    return float(np.sum(np.diff(rows) ** 2))


def estimate_skew(img: np.ndarray, max_angle: float = 45.0) -> tuple[float, float]:
    """(angle, strength): the counter-clockwise rotation in degrees that makes text lines horizontal
    (or vertical), found by projection profiles; strength is how much better it scores than no rotation."""
    gray = to_gray(img)
    h, w = gray.shape
    scale = min(1.0, 900.0 / max(h, w))
    small = cv2.resize(gray, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    mask = text_mask(small)
    ink = float(mask.mean() / 255)
    if ink < 0.002 or ink > 0.6:
        return 0.0, 0.0
    # pad to a square canvas so rotations do not clip the corners
    side = int(math.hypot(*mask.shape)) + 2
    canvas = np.zeros((side, side), np.uint8)
    y0, x0 = (side - mask.shape[0]) // 2, (side - mask.shape[1]) // 2
    canvas[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] = mask
    base = _profile_score(canvas, 0.0)
    coarse = np.arange(-max_angle, max_angle + 0.01, 1.0)
    scores = [_profile_score(canvas, a) for a in coarse]
    best = float(coarse[int(np.argmax(scores))])
    fine = np.arange(best - 1.0, best + 1.01, 0.1)
    fscores = [_profile_score(canvas, a) for a in fine]
    angle = float(fine[int(np.argmax(fscores))])
    strength = max(fscores) / base if base > 0 else 0.0
    return round(angle, 2), strength


def crop_to_ink(img: np.ndarray, margin: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Crop to the bounding box of the ink plus a margin (a fraction of the ink's smaller side, at least
    8 px); returns (image, 3x3 translation matrix). The image is returned unchanged when it has no ink."""
    mask = text_mask(to_gray(img))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    x, y, w, h = cv2.boundingRect(mask)  # of the non-zero pixels (no list of points)
    if w == 0 or h == 0:
        return img, np.eye(3)
    pad = int(max(8, margin * min(w, h)))
    H, W = img.shape[:2]
    x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(W, x + w + pad), min(H, y + h + pad)
    if x1 - x0 < 8 or y1 - y0 < 8 or (x1 - x0) * (y1 - y0) > 0.9 * W * H:
        return img, np.eye(3)
    return img[y0:y1, x0:x1].copy(), np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float)


def noise_sigma(gray: np.ndarray) -> float:
    """Estimated Gaussian noise standard deviation (Immerkaer's method)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    conv = cv2.filter2D(gray, cv2.CV_32F, kernel)  # exact: integer kernel on integer levels
    h, w = gray.shape
    l1 = cv2.norm(conv[1:-1, 1:-1], cv2.NORM_L1)
    return float(l1 * math.sqrt(0.5 * math.pi) / (6 * (w - 2) * (h - 2)))


def apply_gamma(img: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma correction (gamma < 1 brightens)."""
    table = (np.linspace(0, 1, 256) ** gamma * 255).clip(0, 255).astype(np.uint8)
    return cv2.LUT(img, table)


def apply_clahe(img: np.ndarray, clip: float = 2.0) -> np.ndarray:
    """Local contrast equalisation (CLAHE) on the lightness channel."""
    if img.ndim == 2:
        return cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(img)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8)).apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB, dst=lab)  # in place: one colour copy, not two


def binarize(img: np.ndarray) -> np.ndarray:
    """Black text on white via adaptive thresholding (returned as RGB)."""
    mask = text_mask(to_gray(img))
    return cv2.cvtColor(255 - mask, cv2.COLOR_GRAY2RGB)



# ---- layout of the ink: which reading mode suits the image (before any engine runs) -------------------------------

LAYOUT_MAX_SIDE = 1200
"""The ink layout is measured on a copy at most this many pixels a side (text bands survive the shrink)."""


@dataclass
class Layout:
    """What the ink of an image looks like, measured without reading it.

    mode: "empty" (no ink), "line" (one horizontal line or word), "column" (one vertical column),
    "block" (several lines of one text block), "vertical" (columns of vertical CJK text), "sparse" (a
    few lines scattered over a mostly empty page), "page" (several blocks or text columns).
    line_height: median height of the text bands in the image's pixels (0 when there are none).
    box: (left, top, right, bottom) of the ink in the image's pixels."""

    mode: str
    line_height: float
    ink: float
    box: tuple[int, int, int, int]
    rows: int = 0
    columns: int = 0
    row_gap: float = 0.0
    column_gap: float = 0.0

    @property
    def psm(self) -> str:
        """Tesseract's page segmentation mode for this layout (7 line, 5 vertical block, 6 block, 11 sparse,
        3 automatic page)."""
        return {"line": "7", "column": "5", "vertical": "5", "block": "6", "sparse": "11"}.get(self.mode, "3")


def _bands(profile: np.ndarray, min_fill: float) -> list[tuple[int, int, float]]:
    """(start, end, ink) runs of a projection profile above `min_fill`."""
    on = profile > min_fill
    if not on.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], on.astype(np.int8), [0]])))
    return [(int(s), int(e), float(profile[s:e].sum())) for s, e in zip(edges[::2], edges[1::2])]


def _clean_bands(bands: list[tuple[int, int, float]]) -> list[tuple[int, int, float]]:
    """Bands without specks (under 2 % of the largest band's ink), thin bands (marks above or below a line:
    dots, harakat, matras) merged into the nearest band when they lie close to it."""
    if not bands:
        return []
    top = max(b[2] for b in bands)
    bands = [b for b in bands if b[2] >= 0.02 * top]
    if len(bands) < 2:
        return bands
    med = float(np.median([e - s for s, e, _ in bands]))
    out = list(bands)
    changed = True
    while changed and len(out) > 1:
        changed = False
        for i, (s, e, ink) in enumerate(out):
            if e - s >= 0.45 * med:
                continue
            gaps = []
            if i > 0:
                gaps.append((s - out[i - 1][1], i - 1))
            if i + 1 < len(out):
                gaps.append((out[i + 1][0] - e, i + 1))
            gap, j = min(gaps)
            if gap > 0.6 * med:
                continue
            a, b = sorted((i, j))
            out[a] = (out[a][0], out[b][1], out[a][2] + out[b][2])
            del out[b]
            changed = True
            break
    return out


def _gaps(bands: list[tuple[int, int, float]]) -> float:
    g = [b[0] - a[1] for a, b in zip(bands, bands[1:])]
    return float(np.median(g)) if g else 0.0


def analyse_layout(img: np.ndarray) -> Layout:
    """Measure the ink of an image (projection profiles of a text mask): the number of text bands, their
    height and spacing, in both directions, and the mode of reading that suits it."""
    gray = to_gray(img)
    h, w = gray.shape[:2]
    scale = min(1.0, LAYOUT_MAX_SIDE / max(h, w))
    small = cv2.resize(gray, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1 else gray
    mask = text_mask(small) if min(small.shape[:2]) >= 3 else np.zeros_like(small)
    if mean_std(small)[1] < 2.0:
        mask[:] = 0
    ink = float(mask.mean() / 255)
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0 or ink == 0:
        return Layout("empty", 0.0, 0.0, (0, 0, w, h))
    sub = mask[y:y + bh, x:x + bw] // 255
    rows = _clean_bands(_bands(sub.sum(axis=1, dtype=np.float64), max(0.0, 0.004 * bw)))
    cols = _clean_bands(_bands(sub.sum(axis=0, dtype=np.float64), max(0.0, 0.004 * bh)))
    inv = 1.0 / scale
    box = (int(x * inv), int(y * inv), int(min(w, (x + bw) * inv)), int(min(h, (y + bh) * inv)))
    row_h = float(np.median([e - s for s, e, _ in rows])) if rows else float(bh)
    col_w = float(np.median([e - s for s, e, _ in cols])) if cols else float(bw)
    rgap, cgap = _gaps(rows), _gaps(cols)
    n_r, n_c = len(rows), len(cols)

    def make(mode: str, height: float) -> Layout:
        return Layout(mode, round(height * inv, 1), round(ink, 5), box, n_r, n_c, round(rgap * inv, 1),
                      round(cgap * inv, 1))

    sh, sw = mask.shape[:2]
    if n_r <= 1 and bh * 2 <= bw:  # one line: a crop of it, or one line on an otherwise empty page
        return make("line" if sh <= 4 * bh else "sparse", bh)
    if n_c <= 1 and bw * 2 <= bh:
        return make("column" if sw <= 4 * bw else "sparse", bw)
    # vertical text: columns much taller than wide, the gaps between columns wider than those between rows
    # (the characters of neighbouring columns line up in rows only as far as a character's own gap)
    if n_c >= 2 and col_w * 2.5 <= bh and (n_r <= 1 or cgap > 1.6 * max(rgap, 1.0)):
        return make("vertical", col_w)
    if n_r <= 1:
        return make("line" if bw >= bh else "block", bh)
    if ink < 0.02 and rgap > 2.5 * row_h and n_r <= 12:
        return make("sparse", row_h)
    # a gutter: a blank vertical strip inside the text, wider than two line heights, between text on both sides
    if n_c >= 2:
        widths = [(b[0] - a[1]) for a, b in zip(cols, cols[1:])]
        if max(widths) >= 2 * row_h and n_r >= 4:
            return make("page", row_h)
    return make("block", row_h)


def pad_small(img: np.ndarray, layout: Layout, min_height: float = 16.0, target: float = 32.0,
              max_factor: float = 4.0, tight: float = 0.1, max_text: float = 48.0) -> tuple[np.ndarray, np.ndarray, str]:
    """A line or word crop whose text is under `min_height` pixels is enlarged so its text is about `target`
    pixels high, and a crop whose text touches its edges (a margin under `tight` of the text height, text up to
    `max_text` pixels high) gets a border of paper: engines read such crops badly or not at all (tesseract gives
    nothing for most tight word crops). Returns (image, 3x3 matrix original->returned, what was done, "" for
    nothing)."""
    if layout.mode not in ("line", "column", "block") or layout.line_height <= 0:
        return img, np.eye(3), ""
    h, w = img.shape[:2]
    done = []
    matrix = np.eye(3)
    cur = img
    text_h = layout.line_height
    if layout.mode in ("line", "column") and text_h < min_height:
        factor = float(min(max_factor, target / max(text_h, 1.0)))
        if factor >= 1.25 and h * w * factor * factor <= 4_000_000:
            cur = cv2.resize(cur, (int(round(w * factor)), int(round(h * factor))), interpolation=cv2.INTER_CUBIC)
            matrix = np.diag([cur.shape[1] / w, cur.shape[0] / h, 1.0])
            text_h *= factor
            done.append(f"enlarged {factor:.1f}x ({w}x{h} -> {cur.shape[1]}x{cur.shape[0]}): text {layout.line_height:.0f}"
                        " px high")
    x0, y0, x1, y1 = layout.box
    sx, sy = matrix[0, 0], matrix[1, 1]
    margin = min(x0 * sx, y0 * sy, cur.shape[1] - x1 * sx, cur.shape[0] - y1 * sy)
    if (done or text_h <= max_text) and margin < tight * text_h:
        p = max(2, int(round(0.5 * text_h - max(0.0, margin))))
        cur = cv2.copyMakeBorder(cur, p, p, p, p, cv2.BORDER_CONSTANT, value=_border_value(cur))
        matrix = np.array([[1, 0, p], [0, 1, p], [0, 0, 1]], float) @ matrix
        done.append(f"padded {p} px of paper around the text")
    return cur, matrix, "; ".join(done)


HEADLINE = 0.7
"""`headline_strength` at least this: the line is likely Devanagari (whose headline, the shirorekha, joins the
letters of each word: 0.5-1.0 on printed Sanskrit lines, median 0.79; Latin and Cyrillic lines reach 0.6-0.66 at
most, Arabic 0.59, measured for docs/ocr-reading.md). It only orders the scripts tried, it decides nothing."""


def headline_strength(img: np.ndarray, layout: Layout) -> float:
    """The share of a line's ink width that its densest row in the upper half of the ink covers (0 when there
    is no ink): a continuous stroke along the top of the letters, as Devanagari's headline is."""
    x0, y0, x1, y1 = layout.box
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    gray = to_gray(img[y0:y1, x0:x1])
    _, ink = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    if ink.mean() > 0.5:  # light text on a dark ground
        ink = 1 - ink
    rows = ink.mean(axis=1)
    upper = rows[: max(1, int(round(0.45 * len(rows))))]
    return float(upper.max())


def scaled_to_text(img: np.ndarray, layout: Layout, target: float = 40.0) -> tuple[np.ndarray, np.ndarray, str]:
    """A copy whose text is about `target` pixels high (large type shrunk: tesseract finds no line in some
    large-type lines and reads others better at this size), with a border of paper; (image, matrix, what was
    done); the image itself when its text is not large."""
    if layout.line_height <= 1.4 * target:
        return img, np.eye(3), ""
    h, w = img.shape[:2]
    f = max(0.2, target / layout.line_height)
    small = cv2.resize(img, (max(1, int(round(w * f))), max(1, int(round(h * f)))), interpolation=cv2.INTER_AREA)
    m = np.diag([small.shape[1] / w, small.shape[0] / h, 1.0])
    p = int(round(0.5 * target))
    small = cv2.copyMakeBorder(small, p, p, p, p, cv2.BORDER_CONSTANT, value=_border_value(small))
    m = np.array([[1, 0, p], [0, 1, p], [0, 0, 1]], float) @ m
    return small, m, f"shrunk {f:.2f}x so the text is {target:.0f} px high, padded {p} px"


def photometric_needs(img: np.ndarray, options: PreprocessOptions | None = None) -> list[str]:
    """The preprocessing steps `preprocess` would apply to this image by measurement alone (denoise, gamma,
    contrast), without running them: cheap statistics on a small copy."""
    opts = options or PreprocessOptions()
    gray = to_gray(img)
    h, w = gray.shape[:2]
    scale = min(1.0, 1000 / max(h, w))
    small = cv2.resize(gray, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1 else gray
    need = []
    # noise is measured on images of some size only: on a small crop the edges of the type itself read as noise
    if opts.denoise == "on" or (opts.denoise == "auto" and h * w >= 100_000 and noise_sigma(
            gray[max(0, h // 2 - 500):h // 2 + 500, max(0, w // 2 - 500):w // 2 + 500]) > 10):
        need.append("denoise")
    m, s = mean_std(small)
    if opts.gamma == "on" or (opts.gamma == "auto" and m < 90):
        need.append("gamma")
    p1, p99 = gray_percentiles(small, 1, 99)
    if opts.contrast == "on" or (opts.contrast == "auto" and (s < 35 or p99 - p1 < 120)):
        need.append("contrast")
    if opts.binarize == "on":
        need.append("binarize")
    if opts.upscale == "on":
        need.append("upscale")
    return need


OrientationFn = Callable[[np.ndarray], tuple[int, float]]
"""detect(image) -> (degrees clockwise to turn the image upright, confidence 0-1)."""


def preprocess(img: np.ndarray, options: PreprocessOptions | None = None, orientation_fn: OrientationFn | None = None,
               keep_images: bool = False, vertical: bool = False) -> Preprocessed:
    """Run the switched-on steps in order; returns the processed image, the matrix and the step records."""
    opts = options or PreprocessOptions()
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise OcrError("preprocessing needs an HxWx3 uint8 RGB image")
    matrix = np.eye(3)
    info = PreprocessInfo()
    steps: list[StepRecord] = []
    cur = img

    def record(name: str, applied: bool, detail: str, before: np.ndarray, after: np.ndarray) -> None:
        steps.append(StepRecord(name, applied, detail, before if keep_images else None,
                                after if keep_images else None))
        if applied:
            info.steps.append(name)

    # shrink huge images first: every later step (and the engine) then works on at most MAX_OCR_PIXELS
    h, w = cur.shape[:2]
    if h * w > MAX_OCR_PIXELS:
        factor = math.sqrt(MAX_OCR_PIXELS / (h * w))
        after = cv2.resize(cur, (max(1, int(w * factor)), max(1, int(h * factor))), interpolation=cv2.INTER_AREA)
        matrix = np.diag([after.shape[1] / w, after.shape[0] / h, 1.0]) @ matrix
        record("downscale", True, f"shrunk {factor:.2f}x ({w}x{h} -> {after.shape[1]}x{after.shape[0]}) to at "
               f"most {MAX_OCR_PIXELS:,} pixels", cur, after)
        cur = after

    mean, std = mean_std(to_gray(cur))
    info.details.update(mean_brightness=round(mean, 1), contrast=round(std, 1))

    # upscale small images (text under ~20 px is read badly)
    if opts.upscale != "off":
        h, w = cur.shape[:2]
        factor = 2.0 if opts.upscale == "on" else float(np.clip(1200 / max(h, w), 1.0, 3.0))
        factor = factor if factor >= 1.5 else 1.0
        if factor > 1 and h * w * factor * factor <= 40_000_000:
            after = cv2.resize(cur, (int(w * factor), int(h * factor)), interpolation=cv2.INTER_CUBIC)
            matrix = np.diag([factor, factor, 1.0]) @ matrix
            record("upscale", True, f"enlarged {factor:g}x ({w}x{h} -> {after.shape[1]}x{after.shape[0]})", cur, after)
            cur = after
        else:
            record("upscale", False, "large enough", cur, cur)

    # denoise
    if opts.denoise != "off":
        sigma = noise_sigma(to_gray(cur))
        info.details["noise_sigma"] = round(sigma, 2)
        if opts.denoise == "on" or sigma > 10:
            h = float(min(30, max(7, sigma * 1.2)))
            after = cv2.fastNlMeansDenoisingColored(cur, None, h, h, 7, 21)
            record("denoise", True, f"non-local means (noise sigma {sigma:.1f}, h {h:.0f})", cur, after)
            cur = after
        else:
            record("denoise", False, f"noise sigma {sigma:.1f} is low", cur, cur)

    # gamma for dark photos
    if opts.gamma != "off":
        m = mean_std(to_gray(cur))[0]
        if opts.gamma == "on" or m < 90:
            gamma = float(np.clip(math.log(0.7) / math.log(max(m, 1.0) / 255.0), 0.25, 1.0)) if m > 0 else 0.5
            if opts.gamma == "on" and gamma >= 0.99:
                gamma = 0.7
            after = apply_gamma(cur, gamma)
            record("gamma", True, f"brightened dark image (mean {m:.0f}) with gamma {gamma:.2f}", cur, after)
            cur = after
        else:
            record("gamma", False, f"brightness {m:.0f} is fine", cur, cur)

    # contrast
    if opts.contrast != "off":
        g = to_gray(cur)
        s = mean_std(g)[1]
        p1, p99 = gray_percentiles(g, 1, 99)
        spread = p99 - p1
        if opts.contrast == "on" or s < 35 or spread < 120:
            lo, hi = stretch_bounds(g)
            del g
            after = apply_clahe(stretch_levels(cur, lo, hi))
            record("contrast", True, f"stretched levels and CLAHE (contrast {s:.0f}, spread {spread:.0f})", cur, after)
            cur = after
        else:
            record("contrast", False, f"contrast {s:.0f} is fine", cur, cur)

    # deskew
    if opts.deskew != "off":
        angle, strength = estimate_skew(cur)
        info.details["skew_strength"] = round(strength, 3)
        if abs(angle) >= 0.5 and (opts.deskew == "on" or strength > 1.15):
            after, m = rotate_bound(cur, angle)
            # the turned canvas has empty corners: keep the text's bounding box (plus a margin), so a
            # single tilted line becomes a long thin strip again that the detector and recogniser read
            after, t = crop_to_ink(after)
            matrix = t @ m @ matrix
            info.skew = angle
            record("deskew", True, f"rotated {angle:+.1f} degrees (profile gain {strength:.2f})", cur, after)
            cur = after
        else:
            record("deskew", False, f"tilt {angle:+.1f} degrees is negligible or uncertain", cur, cur)

    # 90/180/270 orientation
    if opts.orientation != "off" and orientation_fn is not None:
        turn, conf = orientation_fn(cur)
        info.details["orientation_confidence"] = round(conf, 3)
        if turn % 360:
            after, m = rotate90(cur, turn)
            matrix = m @ matrix
            info.orientation = turn % 360
            record("orientation", True, f"turned {turn} degrees clockwise (confidence {conf:.2f})", cur, after)
            cur = after
        else:
            record("orientation", False, f"upright (confidence {conf:.2f})", cur, cur)

    if opts.binarize == "on":
        after = binarize(cur)
        record("binarize", True, "adaptive threshold", cur, after)
        cur = after
    else:
        record("binarize", False, "off", cur, cur)
    return Preprocessed(cur, matrix, info, steps)
