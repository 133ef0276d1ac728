"""The CPU OCR engines: RapidOCR (default, models inside the wheel) and Tesseract (Debian packs: Arabic,
Devanagari, vertical CJK...). The interface is core.ocr.base, the Qwen3-VL engine core.ocr.vlm, and
core.ocr.registry hands out the engines of a process.

Engines read an already preprocessed RGB image and return lines in that image's pixels.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import shutil
import subprocess
import threading

import cv2
import numpy as np

from core.ocr.base import EngineOutput, OcrEngine
from core.ocr.rapid import NARROW, run_rapidocr, shared_rapidocr
from core.ocr.scripts import LANGUAGES, OSD_SCRIPTS, detect_script, lang_parts, order_lines, strip_direction_marks
from core.ocr.types import OcrError, OcrLine

__all__ = ["EngineOutput", "OcrEngine", "RapidOcrEngine", "TesseractEngine", "script_from_osd",
           "tesseract_languages", "tesseract_path"]

log = logging.getLogger(__name__)


def _box_of(points: np.ndarray | list) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in np.asarray(points).reshape(-1, 2)]


def _is_tall(box: list[list[float]]) -> bool:
    pts = np.asarray(box)
    w = np.linalg.norm(pts[1] - pts[0])
    h = np.linalg.norm(pts[3] - pts[0])
    return bool(h > 1.5 * w)


def _mean_conf(lines: list[OcrLine]) -> float:
    total = sum(len(ln.text) for ln in lines)
    return sum(ln.confidence * len(ln.text) for ln in lines) / total if total else 0.0


class RapidOcrEngine(OcrEngine):
    """RapidOCR (PP-OCR models shipped in the wheel): Chinese, English, Japanese, Latin-script languages."""

    name = "rapidocr"

    def available(self) -> bool:
        """True when the rapidocr package imports."""
        try:
            import rapidocr  # noqa: F401
        except ImportError:
            return False
        return True

    def languages(self) -> list[str]:
        """Hints RapidOCR's bundled models read."""
        return [k for k, v in LANGUAGES.items() if v[1]]

    def version(self) -> str:
        """rapidocr and its package version."""
        import importlib.metadata

        return f"rapidocr-{importlib.metadata.version('rapidocr')}"

    def _call(self, img: np.ndarray, det: bool = True, cls: bool = True, rec: bool = True):
        eng = shared_rapidocr()
        # RapidOCR reads a copy shrunk to `max_side_len` (2000) a side; shrinking here, with its own resize,
        # gives the same reading without the full-size colour copies it would make first
        max_side = float(getattr(eng, "max_side_len", 2000))
        ratio_h = ratio_w = 1.0
        if max(img.shape[:2]) > max_side:
            from rapidocr.utils.process_img import reduce_max_side

            img, ratio_h, ratio_w = reduce_max_side(img, max_side)
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        r = run_rapidocr(bgr, det=det, cls=cls, rec=rec, narrow=NARROW)
        if (ratio_h, ratio_w) != (1.0, 1.0) and getattr(r, "boxes", None) is not None:
            r.boxes = np.asarray(r.boxes, dtype=np.float64) * np.array([ratio_w, ratio_h])
        return r

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Text and score of single-line crops (no detection)."""
        out = []
        for crop in crops:
            r = self._call(crop, det=False, cls=False, rec=True)
            txt = (r.txts or ("",))[0] if getattr(r, "txts", None) else ""
            score = float((r.scores or (0.0,))[0]) if getattr(r, "scores", None) else 0.0
            out.append((txt, score))
        return out

    def detect(self, img: np.ndarray) -> list[list[list[float]]]:
        """Text boxes (polygons) found on the image."""
        r = self._call(img, det=True, cls=False, rec=False)
        boxes = getattr(r, "boxes", None)
        return [] if boxes is None else [_box_of(b) for b in boxes]

    def read(self, image: np.ndarray, lang: str | None = None, vertical: bool | None = None,
             classify: bool = True) -> EngineOutput:
        """Detect and recognise every line; a poor reading is retried with the 0/180 line classifier unless
        `classify` is False (then upside-down text stays a poor reading, for the caller to turn the page)."""
        if lang and not all(LANGUAGES.get(p, ("", False, ""))[1] for p in lang_parts(lang)):
            raise OcrError(f"RapidOCR's bundled models do not read {lang!r}; use --engine tesseract (or auto)")
        # the page is already turned upright (preprocessing), so lines are read as they stand: the
        # per-line 0/180 classifier sometimes flips a good line (coloured words, long lines) into
        # garbage. Only a poor reading is retried with the classifier (a page of upside-down lines).
        lines = self._lines(self._call(image, cls=False))
        if classify and (not lines or _mean_conf(lines) < 0.8):
            flipped = self._lines(self._call(image, cls=True))
            if flipped and _mean_conf(flipped) > _mean_conf(lines) + 0.02:
                lines = flipped
        h, w = image.shape[:2]
        if len(lines) == 1 and (w >= 3 * h or h >= 3 * w) and lines[0].confidence < 0.95:
            # a single-line crop read without confidence: the detector's tight box can clip strokes;
            # recognising the whole strip is often better, so keep whichever reading is more confident
            crop = image if w >= h else cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
            rr = self._call(crop, det=False, cls=classify, rec=True)
            if getattr(rr, "txts", None) and rr.txts[0].strip() and rr.scores[0] > lines[0].confidence and \
                    len(rr.txts[0].strip()) >= len(lines[0].text):
                box = [[0.0, 0.0], [float(w), 0.0], [float(w), float(h)], [0.0, float(h)]]
                lines = [OcrLine(rr.txts[0].strip(), box, round(float(rr.scores[0]), 4), h > w)]
        if not lines:
            # a single-line crop often has no detectable box: recognise the whole image as one line
            if w >= 2 * h or h >= 2 * w:
                crop = image if w >= h else cv2.rotate(image, cv2.ROTATE_90_COUNTERCLOCKWISE)
                rr = self._call(crop, det=False, cls=classify, rec=True)
                if getattr(rr, "txts", None) and rr.txts[0].strip() and rr.scores[0] > 0.5:
                    box = [[0.0, 0.0], [float(w), 0.0], [float(w), float(h)], [0.0, float(h)]]
                    lines.append(OcrLine(rr.txts[0].strip(), box, round(float(rr.scores[0]), 4), h > w))
        text = "".join(ln.text for ln in lines)
        script = detect_script(text)
        vert = sum(len(ln.text) for ln in lines if ln.vertical) > 0.5 * max(1, len(text))
        if vertical is not None:
            vert = vertical
        lines = order_lines(lines, vertical=vert, rtl=script in ("Arabic", "Hebrew"))
        return EngineOutput(lines, self.name, lang or "", script, vert)

    @staticmethod
    def _lines(r) -> list[OcrLine]:
        lines: list[OcrLine] = []
        if getattr(r, "boxes", None) is not None and r.txts:
            for box, txt, score in zip(r.boxes, r.txts, r.scores):
                if txt.strip():
                    b = _box_of(box)
                    lines.append(OcrLine(txt.strip(), b, round(float(score), 4), _is_tall(b)))
        return lines

    def orientation(self, image: np.ndarray, allow_vertical: bool = True) -> tuple[int, float, bool]:
        """(degrees clockwise to turn the page upright, confidence, page looks like vertical CJK text),
        from recognition scores of the largest text boxes read at each candidate turn."""
        h, w = image.shape[:2]
        scale = min(1.0, 960 / max(h, w))
        small = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else image
        boxes = self.detect(small)
        if not boxes:
            return 0, 0.0, False
        rects = []
        for b in boxes:
            pts = np.asarray(b)
            x0, y0 = np.maximum(pts.min(axis=0).astype(int), 0)
            x1, y1 = pts.max(axis=0).astype(int)
            if x1 - x0 >= 4 and y1 - y0 >= 4:
                rects.append((x0, y0, x1, y1))
        if not rects:
            return 0, 0.0, False
        tall_area = sum((r[2] - r[0]) * (r[3] - r[1]) for r in rects if (r[3] - r[1]) > 1.5 * (r[2] - r[0]))
        wide_area = sum((r[2] - r[0]) * (r[3] - r[1]) for r in rects if (r[2] - r[0]) > 1.5 * (r[3] - r[1]))
        rects.sort(key=lambda r: -(r[2] - r[0]) * (r[3] - r[1]))
        crops = [small[y0:y1, x0:x1] for x0, y0, x1, y1 in rects[:6]]
        tall = tall_area > wide_area
        candidates = (90, 270) if tall else (0, 180)
        scores: dict[int, float] = {}
        texts: dict[int, str] = {}
        for turn in candidates:
            code = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}[turn]
            rotated = [c if code is None else cv2.rotate(c, code) for c in crops]
            res = self.recognise(rotated)
            n = sum(max(len(t), 1) for t, _ in res)
            scores[turn] = sum(s * max(len(t), 1) for t, s in res) / n
            texts[turn] = "".join(t for t, _ in res)
            if turn == 0 and scores[0] >= 0.93 and len(texts[0]) >= 8:
                # upright text reads with high scores; an upside-down page never does: skip the 180 read
                return 0, float(scores[0]), False
        best = max(scores, key=lambda k: scores[k])
        other = min(scores, key=lambda k: scores[k])
        conf = float(scores[best] - scores[other]) if len(scores) > 1 else float(scores[best])
        if tall and allow_vertical and detect_script(texts[best]) in ("Han", "Japanese", "Hangul"):
            return 0, float(scores[best]), True  # upright vertical CJK columns, not a turned page
        if conf < 0.05 or scores[best] < 0.75:
            return 0, conf, False  # unsure (e.g. a script RapidOCR cannot read): leave the page as it is
        return best, conf, False


_TESS_LOCK = threading.Lock()
PSMS = ("3", "4", "5", "6", "7", "8", "11", "13")
"""Tesseract page segmentation modes the engine accepts (0, OSD, has its own call: `osd`)."""


def tesseract_path() -> str | None:
    """Path of the tesseract executable, or None."""
    return shutil.which("tesseract")


def tesseract_languages() -> list[str]:
    """Installed tesseract language packs (empty when tesseract is missing)."""
    from core.status import tesseract_languages as langs

    return langs() or []


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise OcrError("could not encode the image for tesseract")
    return buf.tobytes()


class TesseractEngine(OcrEngine):
    """Tesseract 5 through its command line (Debian packs): Arabic, Devanagari, vertical CJK and more."""

    name = "tesseract"

    def __init__(self, timeout_s: float = 180.0) -> None:
        self.timeout_s = timeout_s

    def available(self) -> bool:
        """True when the tesseract executable is on PATH."""
        return tesseract_path() is not None

    def version(self) -> str:
        """tesseract's version line."""
        exe = tesseract_path()
        if not exe:
            return "tesseract-missing"
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "tesseract"

    def languages(self) -> list[str]:
        """Language hints whose tesseract pack is installed."""
        packs = set(tesseract_languages())
        return [k for k, v in LANGUAGES.items() if v[2] in packs]

    def _run(self, image: np.ndarray, args: list[str]) -> str:
        exe = tesseract_path()
        if not exe:
            raise OcrError("tesseract is not installed; apt-get install tesseract-ocr tesseract-ocr-eng "
                           "(plus tesseract-ocr-<lang> packs), or use --engine rapidocr")
        try:
            out = subprocess.run([exe, "stdin", "stdout", *args], input=_png(image), capture_output=True,
                                 timeout=self.timeout_s, env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"})
        except subprocess.TimeoutExpired as exc:
            raise OcrError(f"tesseract took more than {self.timeout_s:.0f} s on one page; lower the DPI") from exc
        if out.returncode != 0:
            err = out.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OcrError(f"tesseract failed: {err[-1] if err else out.returncode}")
        return out.stdout.decode("utf-8", "replace")

    def pack_for(self, lang: str | None, vertical: bool = False) -> str:
        """The tesseract -l value for a language hint (e.g. "chi_sim_vert"); raises OcrError if missing."""
        packs = set(tesseract_languages())
        codes = [LANGUAGES[p][2] for p in lang_parts(lang)] or ["eng"]
        if lang == "sa" and "san" in packs and "hin" in packs:
            codes = ["san", "hin"]
        elif lang == "hi" and "san" in packs and "hin" in packs:
            codes = ["hin", "san"]  # the Sanskrit pack reads the conjuncts Hindi text also has (CER 0.08 against 0.13)
        if vertical and len(codes) == 1 and f"{codes[0]}_vert" in packs:
            codes = [f"{codes[0]}_vert"]
        code = "+".join(dict.fromkeys(codes))
        for part in code.split("+"):
            if part not in packs:
                raise OcrError(f"tesseract has no {part!r} language pack; apt-get install tesseract-ocr-"
                               f"{part.replace('_', '-')} (installed: {', '.join(sorted(packs)) or 'none'})")
        return code

    def osd(self, image: np.ndarray) -> tuple[int, str, float]:
        """(degrees clockwise to turn upright, script name, script confidence) from tesseract's OSD;
        raises OcrError when OSD cannot decide (too little text) or the osd pack is missing."""
        if "osd" not in tesseract_languages():
            raise OcrError("tesseract's osd pack is missing; apt-get install tesseract-ocr-osd")
        try:
            text = self._run(image, ["--psm", "0"])
        except OcrError as exc:
            raise OcrError(f"orientation and script detection found too little text ({exc})") from exc
        rot = re.search(r"Rotate:\s*(\d+)", text)
        script = re.search(r"Script:\s*(\S+)", text)
        conf = re.search(r"Script confidence:\s*([\d.]+)", text)
        if not rot or not script:
            raise OcrError("orientation and script detection found too little text")
        return int(rot.group(1)), script.group(1), float(conf.group(1)) if conf else 0.0

    def read(self, image: np.ndarray, lang: str | None = None, vertical: bool | None = None,
             pack: str | None = None, psm: str | None = None) -> EngineOutput:
        """Run tesseract (TSV output) and group its words into lines with boxes and confidences.

        `psm` is tesseract's page segmentation mode (7 one line, 6 one block, 11 sparse text, 5 a vertical
        block, 3 automatic); by default 5 for vertical text and 3 otherwise."""
        vert = bool(vertical)
        code = pack or self.pack_for(lang, vertical=vert)
        psm = psm or ("5" if vert else "3")
        if psm not in PSMS:
            raise OcrError(f"unknown tesseract page segmentation mode {psm!r}; use one of {', '.join(PSMS)}")
        with _TESS_LOCK:
            tsv = self._run(image, ["-l", code, "--psm", psm, "tsv"])
        rows = list(csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE))
        groups: dict[tuple[str, str, str, str], list[dict]] = {}
        for r in rows:
            if r.get("level") != "5" or not (r.get("text") or "").strip():
                continue
            try:
                if float(r["conf"]) < 0:
                    continue
            except (TypeError, ValueError):
                continue
            groups.setdefault((r["page_num"], r["block_num"], r["par_num"], r["line_num"]), []).append(r)
        lines: list[OcrLine] = []
        for words in groups.values():
            x0 = min(int(w["left"]) for w in words)
            y0 = min(int(w["top"]) for w in words)
            x1 = max(int(w["left"]) + int(w["width"]) for w in words)
            y1 = max(int(w["top"]) + int(w["height"]) for w in words)
            text = _join_words([strip_direction_marks(w["text"]).strip() for w in words])
            if not text:
                continue
            conf = sum(float(w["conf"]) for w in words) / len(words) / 100.0
            box = [[float(x0), float(y0)], [float(x1), float(y0)], [float(x1), float(y1)], [float(x0), float(y1)]]
            lines.append(OcrLine(text, box, round(conf, 4), vert))
        script = detect_script("".join(ln.text for ln in lines))
        if vert:
            lines = order_lines(lines, vertical=True)
        return EngineOutput(lines, self.name, lang or code, script, vert, pack=code)


def _join_words(words: list[str]) -> str:
    """Tesseract's words of one line joined: a space between two non-CJK words only, as Chinese and
    Japanese are set (mixed "Hello world!你好世界" keeps its English space)."""
    out = ""
    for w in words:
        if out and detect_script(out[-1]) not in ("Han", "Japanese") and detect_script(w[:1]) not in ("Han", "Japanese"):
            out += " "
        out += w
    return out


def script_from_osd(engine: TesseractEngine, image: np.ndarray) -> str | None:
    """A language hint from tesseract's script detection, or None when it cannot tell."""
    try:
        _, script, conf = engine.osd(image)
    except OcrError:
        return None
    return OSD_SCRIPTS.get(script) if conf > 0.5 else None
