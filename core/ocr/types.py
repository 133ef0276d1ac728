"""Result dataclasses of OCR: documents -> pages -> lines (text, polygon, confidence), tables, fields.

Everything here serialises to JSON (`to_dict` / `from_dict`); nothing is ever pickled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from core.errors import Busy, UserError

Point = list[float]
Polygon = list[Point]

ENGINE_NAMES = ("rapidocr", "tesseract", "vlm", "auto")


def jsonable(value: Any) -> Any:
    """The value with numpy scalars/arrays and tuples turned into plain JSON types."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


class OcrError(UserError, ValueError):
    """A user-caused OCR problem (bad file, missing engine, unknown option); the message names cause and fix."""


class OcrBusy(OcrError, Busy):
    """OCR was refused because other heavy work holds the memory it needs; try again later."""


@dataclass
class OcrLine:
    """One line (or vertical column) of text with its polygon in the original page's pixels."""

    text: str
    box: Polygon
    confidence: float
    vertical: bool = False

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom) of the polygon."""
        xs = [p[0] for p in self.box]
        ys = [p[1] for p in self.box]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class TableCell:
    """One cell of a rebuilt grid; a spanning cell keeps its text in its top-left grid position."""

    row: int
    col: int
    text: str
    box: list[float]  # left, top, right, bottom in page pixels
    row_span: int = 1
    col_span: int = 1


@dataclass
class Table:
    """A table found on a page: `rows` is the cell text grid (rows of cells), `cells` keeps the boxes."""

    page: int
    kind: Literal["ruled", "unruled", "vlm"]
    box: list[float]
    rows: list[list[str]]
    cells: list[TableCell] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        """(number of rows, number of columns)."""
        return len(self.rows), max((len(r) for r in self.rows), default=0)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Table":
        """A Table from its `asdict` form."""
        return cls(
            page=d["page"], kind=d["kind"], box=list(d["box"]), rows=[list(r) for r in d["rows"]],
            cells=[TableCell(**c) for c in d.get("cells", [])],
        )


@dataclass
class PreprocessInfo:
    """What preprocessing did to one page (the images themselves are not kept in results)."""

    steps: list[str] = field(default_factory=list)
    orientation: int = 0  # degrees clockwise the page was turned to read it (0, 90, 180, 270)
    skew: float = 0.0  # degrees of small tilt corrected
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Annotation:
    """A reading aid printed beside the main text and kept out of it: `kind` "ruby" is furigana, the small kana
    beside vertical (or horizontal) text that give the reading of the characters next to them.

    `line` is the index in the page's `lines` of the line it stands beside (-1 when none), `start` and `end` the
    characters of that line it covers (`base` is that text: "吾輩" for the ruby "わがはい"); `box` is the
    annotation's own polygon in the page's pixels."""

    kind: str
    text: str
    box: Polygon
    line: int = -1
    start: int = 0
    end: int = 0
    base: str = ""
    confidence: float = 0.0


@dataclass
class OcrPage:
    """One page's text: lines in reading order, where the text came from and what was corrected."""

    index: int  # 0-based page number in the document
    width: int
    height: int
    lines: list[OcrLine] = field(default_factory=list)
    engine: str = ""
    source: Literal["ocr", "text-layer"] = "ocr"
    language: str = ""
    script: str = ""
    vertical: bool = False
    seconds: float = 0.0
    preprocess: PreprocessInfo = field(default_factory=PreprocessInfo)
    tables: list[Table] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)  # ruby kept out of the main text

    @property
    def text(self) -> str:
        """The page text, one line per OCR line (annotations such as ruby are not in it)."""
        return "\n".join(line.text for line in self.lines)

    @property
    def mean_confidence(self) -> float:
        """Character-weighted mean confidence of the lines (0 when there are none)."""
        total = sum(len(ln.text) for ln in self.lines)
        if not total:
            return 0.0
        return sum(ln.confidence * len(ln.text) for ln in self.lines) / total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OcrPage":
        """An OcrPage from its `asdict` form."""
        d = dict(d)
        d["lines"] = [OcrLine(**ln) for ln in d.get("lines", [])]
        d["preprocess"] = PreprocessInfo(**d.get("preprocess", {}))
        d["tables"] = [Table.from_dict(t) for t in d.get("tables", [])]
        d["annotations"] = [Annotation(**a) for a in d.get("annotations", [])]
        return cls(**d)


@dataclass
class LineItem:
    """One invoice line: description, quantity, unit price and amount (None when not found)."""

    description: str
    amount: float | None = None
    quantity: float | None = None
    unit_price: float | None = None


@dataclass
class FieldEvidence:
    """Where a field's value was read: the text of its line(s), their page and box, and how sure it is."""

    text: str = ""  # the line(s) the value came from, as read
    page: int = 0  # 0-based page index
    box: list[float] = field(default_factory=list)  # left, top, right, bottom in page pixels; empty = not placed
    lines: list[int] = field(default_factory=list)  # indices of those lines in the page's `lines`
    confidence: float = 0.0  # 0-1: the reading's confidence times how sure the rule (or the model) is
    source: str = "rules"  # "rules" (labels and shapes in the text) or "model" (Qwen3-VL)


@dataclass
class InvoiceFields:
    """Fields read from an invoice or receipt, with the checks that were run on them.

    `evidence` maps a field name (vendor, address, date, invoice_number, currency, subtotal, tax, total,
    tax_id, and line_items[0], line_items[1], ...) to where its value was read."""

    vendor: str | None = None
    invoice_number: str | None = None
    date: str | None = None  # ISO 8601 (YYYY-MM-DD)
    total: float | None = None
    subtotal: float | None = None
    tax: float | None = None
    currency: str | None = None
    tax_id: str | None = None
    line_items: list[LineItem] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    address: str | None = None  # the issuer's address, lines joined with ", "
    buyer: str | None = None  # the name in the bill-to / customer block (never taken as the issuer)
    evidence: dict[str, FieldEvidence] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. the model's answer was not valid and was ignored

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InvoiceFields":
        """InvoiceFields from its `asdict` form (JSON written before evidence existed reads too)."""
        d = dict(d)
        d["line_items"] = [LineItem(**li) for li in d.get("line_items", [])]
        d["evidence"] = {k: FieldEvidence(**v) for k, v in (d.get("evidence") or {}).items()}
        return cls(**d)


@dataclass
class OcrResult:
    """A whole document's OCR result: pages, tables (on the pages), invoice fields, options used."""

    name: str
    input_hash: str
    pages: list[OcrPage] = field(default_factory=list)
    page_count: int = 0  # pages in the document (not only the selected ones)
    options: dict[str, Any] = field(default_factory=dict)
    fields: InvoiceFields | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All pages' text, pages separated by a blank line."""
        return "\n\n".join(p.text for p in self.pages)

    @property
    def tables(self) -> list[Table]:
        """Every table of every page, in page order."""
        return [t for p in self.pages for t in p.tables]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OcrResult":
        """An OcrResult from `to_dict` output (e.g. read back from the cache)."""
        d = dict(d)
        d["pages"] = [OcrPage.from_dict(p) for p in d.get("pages", [])]
        d["fields"] = InvoiceFields.from_dict(d["fields"]) if d.get("fields") else None
        return cls(**d)
