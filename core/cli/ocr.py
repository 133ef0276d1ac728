"""`vlscope ocr FILE ...` (read a PDF or image) and `vlscope ocr eval [FOLDER]` (the accuracy report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.errors import CliError


def _progress(fraction: float, message: str = "", stage: str = "") -> None:
    print(f"[{fraction * 100:3.0f}%] {message}", file=sys.stderr, flush=True)


def cmd_ocr(args: argparse.Namespace) -> int:
    from core.app import Runtime
    from core.ocr.exports import export
    from core.ocr.pipeline import OcrOptions
    from core.ocr.preprocess import PreprocessOptions
    from core.ocr.types import OcrError

    if args.file == "eval":
        return cmd_eval(args)
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"file {path} does not exist or is not a file")
    runtime = Runtime.build()
    try:
        settings = runtime.settings
        pre = PreprocessOptions.from_dict({k: v for k, v in (("deskew", args.deskew), ("orientation", args.orientation),
                                                             ("denoise", args.denoise), ("contrast", args.contrast),
                                                             ("gamma", args.gamma), ("binarize", args.binarize)) if v})
        options = OcrOptions(engine=args.engine, lang=args.lang, pages=args.pages, dpi=args.dpi, enhanced=args.enhanced,
                             vertical=args.vertical, use_text_layer=not args.no_text_layer, fields=args.fields,
                             max_pages=args.max_pages, preprocess=pre)
        result = runtime.documents.read(path, options, progress=None if args.quiet else _progress)
        data = export(result, args.format, source=path, max_pixels=settings.max_image_pixels, settings=settings)
    except OcrError as exc:
        raise CliError(str(exc)) from exc
    finally:
        runtime.close()
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output} ({len(data):,} bytes)", file=sys.stderr)
    elif args.format in ("xlsx", "pdf"):
        if sys.stdout.isatty():
            raise CliError(f"--format {args.format} is binary; write it to a file with -o FILE")
        sys.stdout.buffer.write(data)
    else:
        sys.stdout.write(data.decode("utf-8"))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from core.ocr.evaluate import SECTIONS, default_eval_folder, default_extra, run_eval

    folder = Path(args.folder) if getattr(args, "folder", None) else default_eval_folder()
    if folder is None or not folder.is_dir():
        raise CliError(f"no evaluation folder: {folder or '../shared/eval'} is not there; give one "
                       "(vlscope ocr eval FOLDER) or clone the project beside ../shared/eval")
    engines = [e.strip() for e in (args.engines or "rapidocr,tesseract,auto").split(",") if e.strip()]
    conditions = [c.strip() for c in args.conditions.split(",")] if args.conditions else None
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if getattr(args, "sections", None) else None
    for sec in sections or []:
        if sec not in SECTIONS:
            raise CliError(f"unknown section {sec!r}; choose from {', '.join(SECTIONS)}")
    extra = Path(args.extra) if getattr(args, "extra", None) else default_extra()
    try:
        run_eval(folder, engines=engines, conditions=conditions, limit=args.limit, out=sys.stdout,
                 json_path=Path(args.json) if args.json else None, extra=extra, sections=sections,
                 progress=not args.quiet)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ocr", help="read text, tables and invoice fields from a PDF or image (or: ocr eval)",
                       description="Read a PDF or image: `vlscope ocr FILE [options]`. "
                       "`vlscope ocr eval [FOLDER]` prints the accuracy report.")
    p.add_argument("file", help="PDF or image (PNG, JPEG, TIFF, WebP, BMP), or `eval` for the accuracy report")
    p.add_argument("folder", nargs="?", help="(eval) folder with the evaluation set; default ../shared/eval")
    p.add_argument("--engine", default="auto", choices=["auto", "rapidocr", "tesseract", "vlm"])
    p.add_argument("--lang", default=None, help="language hint: en, de, fr, zh, zh-tw, ja, ar, fa, hi, sa, ru; several joined with + for mixed text, "
                   "e.g. en+zh (default: detect)")
    p.add_argument("--pages", default=None, help="1-based page ranges, e.g. 1-3,5 (default: all)")
    p.add_argument("--dpi", type=int, default=200, help="PDF render resolution (default 200)")
    p.add_argument("--enhanced", action="store_true", help="slower, more accurate: try orientations and upscaling")
    p.add_argument("--vertical", default="auto", choices=["auto", "on", "off"], help="vertical text columns")
    p.add_argument("--format", default="txt", choices=["txt", "md", "json", "csv", "xlsx", "pdf", "html"])
    p.add_argument("-o", "--output", help="write the export to this file instead of stdout")
    p.add_argument("--fields", default="auto", choices=["auto", "on", "off"], help="invoice/receipt fields")
    p.add_argument("--no-text-layer", action="store_true", help="OCR PDF pages even when they have a text layer")
    p.add_argument("--max-pages", type=int, default=300, help="refuse more pages than this (default 300)")
    for step in ("deskew", "orientation", "denoise", "contrast", "gamma", "binarize"):
        p.add_argument(f"--{step}", choices=["auto", "on", "off"], default=None, help=f"preprocessing: {step}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--engines", default=None, help="(eval) engines to compare (default rapidocr,tesseract,auto)")
    p.add_argument("--conditions", default=None, help="(eval) conditions, e.g. original,blur,tilt15")
    p.add_argument("--limit", type=int, default=None, help="(eval) at most this many OCR files (table files per set)")
    p.add_argument("--json", default=None, help="(eval) also write every measurement to this JSON file")
    p.add_argument("--extra", default=None, help="(eval) folder of fetched public sets (tables, reading, fields); "
                   "default $VLSCOPE_EVALDATA or /tmp/evaldata")
    p.add_argument("--sections", default=None, help="(eval) sections to run: ocr,reading,fields,tables,speed "
                   "(default all)")
    p.set_defaults(func=cmd_ocr)
