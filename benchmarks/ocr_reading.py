"""Reading accuracy and speed of VLScope's OCR against the plain engine, in one process.

    .venv/bin/python -m benchmarks.ocr_reading [--eval ../shared/eval] [--extra /tmp/evaldata] [--limit N]

Prints the CER table of core.ocr.eval_reading (per set and script: VLScope without a hint, with the set's
hint, the plain engine; seconds per item), then speed figures: a line crop, a word crop and a printed A4 page,
VLScope (auto) against the engine alone on the same image, best of 3 runs each after a warm-up, with the CPU
seconds of that run (less sensitive to other work than wall time), their ratio and VLScope's seconds per stage
(layout, plain reading, preprocessing, ..., finish); then where the engines spend an A4 page (RapidOCR's
detection and recognition, tesseract alone). The machine's load is printed too: on a shared 2-core machine
other work slows both columns alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.ocr.eval_reading import EVAL_DATA, format_report, plain_reading, reading_report  # noqa: E402


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf", size)


def line_crop() -> np.ndarray:
    """A printed line as a crop: 30 px type, 8 px margins."""
    from PIL import Image, ImageDraw

    text = "Invoice totals are checked against the line items of page 3."
    f = _font(30)
    w = int(f.getlength(text)) + 16
    img = Image.new("RGB", (w, 46), "white")
    ImageDraw.Draw(img).text((8, 4), text, fill="black", font=f)
    return np.array(img)


def word_crop() -> np.ndarray:
    """A word crop 22 px high, cut tight around the ink."""
    from PIL import Image, ImageDraw

    f = _font(20)
    left, top, right, bottom = f.getbbox("Payment")
    img = Image.new("RGB", (right - left + 2, 22), "white")
    ImageDraw.Draw(img).text((1 - left, (22 - (bottom - top)) // 2 - top), "Payment", fill="black", font=f)
    return np.array(img)


def a4_page(dpi: int = 200) -> np.ndarray:
    """A printed A4 page at `dpi`: 40 lines of 11 pt text."""
    from PIL import Image, ImageDraw

    words = ("the quick brown fox jumps over lazy dog invoice total amount paid report section page number results "
             "measured against plain engine reading order columns blocks").split()
    rng = np.random.default_rng(0)
    w, h = int(8.27 * dpi), int(11.69 * dpi)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    f = _font(int(11 / 72 * dpi))
    y = int(0.8 * dpi)
    for _ in range(40):
        line: list[str] = []
        while f.getlength(" ".join(line + ["measured"])) < w - 1.6 * dpi:
            line.append(words[int(rng.integers(len(words)))])
        d.text((int(0.8 * dpi), y), " ".join(line).capitalize() + ".", fill="black", font=f)
        y += int(11 / 72 * dpi * 1.45)
    return np.array(img)


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (tesseract runs as a child)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _best(fn, runs: int = 3) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, its result) of `runs` runs after a warm-up."""
    fn()  # warm-up (models loaded, caches filled)
    best = (float("inf"), 0.0, None)
    for _ in range(runs):
        c, t = _cpu(), time.perf_counter()
        r = fn()
        wall, cpu = time.perf_counter() - t, _cpu() - c
        if wall < best[0]:
            best = (wall, cpu, r)
    return best


def speed() -> list[tuple[str, float, float, float, float, dict]]:
    """(item, VLScope s, its CPU s, plain engine s, its CPU s, VLScope's seconds per stage) per item."""
    from core.ocr.pipeline import OcrOptions, ocr_image

    out = []
    for name, img in (("line crop", line_crop()), ("word crop", word_crop()), ("A4 page 200 dpi", a4_page())):
        ours, ours_cpu, page = _best(lambda: ocr_image(img, OcrOptions(tables=False, fields="off")))
        plain, plain_cpu, _ = _best(lambda: plain_reading(img, "Latin"))
        out.append((name, ours, ours_cpu, plain, plain_cpu, dict(page.preprocess.details.get("stage_seconds", {}))))
    return out


def engine_stages(img: np.ndarray) -> dict[str, float]:
    """Where the engines spend an A4 page: RapidOCR's detection and recognition (its own timings, no line
    classifier), and tesseract alone on the page (`-l eng --psm 3`, one thread), best of 3."""
    import cv2

    from core.ocr.engines import TesseractEngine
    from core.ocr.rapid import run_rapidocr

    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    runs = [run_rapidocr(bgr, cls=False) for _ in range(4)][1:]
    det = min(float(r.elapse_list[0] or 0.0) for r in runs)
    rec = min(float(r.elapse_list[2] or 0.0) for r in runs)
    tess, _, _ = _best(lambda: TesseractEngine().read(img, "en", psm="3"))
    return {"rapidocr_detection": det, "rapidocr_recognition": rec, "rapidocr_lines": len(runs[0].txts or ()),
            "tesseract_psm3": tess}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "eval")
    ap.add_argument("--extra", type=Path, default=EVAL_DATA)
    ap.add_argument("--limit", type=int, default=None, help="items of each public set at most")
    ap.add_argument("--no-accuracy", action="store_true")
    args = ap.parse_args(argv)
    print(f"# OCR reading benchmark; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if not args.no_accuracy:
        t = time.perf_counter()
        rows = reading_report(args.eval if args.eval.is_dir() else None, args.extra, args.limit)
        print(f"## CER per set and script (eval folder {args.eval}, public sets {args.extra}); "
              f"{time.perf_counter() - t:.0f} s")
        print(format_report(rows) if rows else "no evaluation files found")
    print(f"## speed, best of 3 after a warm-up (CPU seconds of that run beside); load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'item':18} {'vlscope_s':>10} {'cpu_s':>6} {'plain_s':>8} {'cpu_s':>6} {'ratio':>6}  vlscope stages (s)")
    for name, ours, ours_cpu, plain, plain_cpu, stages in speed():
        st = " ".join(f"{k} {v:.3f}" for k, v in stages.items())
        print(f"{name:18} {ours:10.3f} {ours_cpu:6.2f} {plain:8.3f} {plain_cpu:6.2f} {ours / max(plain, 1e-6):6.2f}  {st}")
    eng = engine_stages(a4_page())
    print(f"## the engines on the A4 page (best of 3); load average {os.getloadavg()[0]:.2f}")
    print(f"RapidOCR detection {eng['rapidocr_detection']:.3f} s, recognition {eng['rapidocr_recognition']:.3f} s "
          f"({eng['rapidocr_lines']} lines); tesseract -l eng --psm 3 alone {eng['tesseract_psm3']:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
