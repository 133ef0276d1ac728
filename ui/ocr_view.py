"""Pictures of OCR results: the page with every line's box drawn over it (its text on hover), and the page with
each invoice field's box, named, with its value and confidence on hover."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

FIELD_LABELS = {"vendor": "Vendor", "address": "Address", "buyer": "Buyer", "invoice_number": "Invoice number",
                "date": "Date", "subtotal": "Subtotal", "tax": "Tax", "total": "Total", "currency": "Currency",
                "tax_id": "Tax id"}
"""Invoice fields in the order the page lists them, with the names a user reads."""


@dataclass
class FieldRow:
    """One invoice field as the page shows it: name, value, and where it was read (page, box, confidence)."""

    key: str
    label: str
    value: str
    page: int | None = None
    box: list[float] | None = None
    confidence: float | None = None
    source: str = ""
    line: str = ""


def field_rows(fields, line_items: bool = True) -> list[FieldRow]:
    """Every invoice field of `fields` (core.ocr.types.InvoiceFields) with its evidence, in FIELD_LABELS order;
    then each line item that has evidence ("Line item 1", ...)."""
    rows = []
    for key, label in FIELD_LABELS.items():
        value = getattr(fields, key, None)
        ev = (fields.evidence or {}).get(key)
        rows.append(FieldRow(key, label, "" if value is None else _value_text(value),
                             ev.page if ev else None, list(ev.box) if ev and ev.box else None,
                             ev.confidence if ev and value is not None else None, ev.source if ev else "",
                             ev.text if ev else ""))
    if line_items:
        for n, item in enumerate(fields.line_items):
            ev = (fields.evidence or {}).get(f"line_items[{n}]")
            if ev is None or not ev.box:
                continue
            text = " · ".join(str(v) for v in vars(item).values() if v not in (None, ""))
            rows.append(FieldRow(f"line_items[{n}]", f"Line item {n + 1}", text, ev.page, list(ev.box),
                                 ev.confidence, ev.source, ev.text))
    return rows


def _value_text(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _page(image: np.ndarray, max_width: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = min(1.0, max_width / max(1, w))
    if scale < 1.0:
        import cv2

        image = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    return image, scale


def _layout(fig: go.Figure, shown_h: int) -> go.Figure:
    fig.update_layout(margin=dict(l=0, r=0, t=0, b=0), height=min(900, max(300, int(shown_h * 0.8))))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig


def boxes_figure(image: np.ndarray, lines: list, max_width: int = 1400) -> go.Figure:
    """The page image with one outlined polygon per OCR line (hover: the line's text, escaped, and confidence)."""
    image, scale = _page(image, max_width)
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    xs: list[float | None] = []
    ys: list[float | None] = []
    cx, cy, tips = [], [], []
    for line in lines:
        pts = [(p[0] * scale, p[1] * scale) for p in line.box]
        if not pts:
            continue
        xs += [p[0] for p in pts] + [pts[0][0], None]
        ys += [p[1] for p in pts] + [pts[0][1], None]
        cx.append(sum(p[0] for p in pts) / len(pts))
        cy.append(sum(p[1] for p in pts) / len(pts))
        tips.append(f"{html.escape(line.text, quote=False)}<br>confidence {line.confidence:.2f}")
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#d62728", width=2), hoverinfo="skip",
                             showlegend=False))
    fig.add_trace(go.Scatter(x=cx, y=cy, mode="markers", marker=dict(size=14, opacity=0.01, color="#d62728"),
                             hovertext=tips, hovertemplate="%{hovertext}<extra></extra>", showlegend=False))
    return _layout(fig, image.shape[0])


def confidence_colour(confidence: float | None) -> str:
    """Green when sure (>= 0.8), amber when less (>= 0.5), red below: the colour of a field's box."""
    if confidence is None:
        return "#7f7f7f"
    return "#2ca02c" if confidence >= 0.8 else "#ff7f0e" if confidence >= 0.5 else "#d62728"


def fields_figure(image: np.ndarray, rows: list[FieldRow], page: int, max_width: int = 1400) -> go.Figure:
    """The page image (0-based `page`) with a rectangle around each field read there, named above it and
    coloured by its confidence; hover: the field, its value, the line it came from and the confidence
    (OCR text escaped, never HTML)."""
    image, scale = _page(image, max_width)
    fig = go.Figure(go.Image(z=image, hoverinfo="skip"))
    placed = [r for r in rows if r.page == page and r.box and len(r.box) == 4 and r.value]
    # fields read from the same line (a total and its currency) share one box and one label
    boxes: dict[tuple[float, ...], list[FieldRow]] = {}
    for r in placed:
        boxes.setdefault(tuple(round(v, 1) for v in r.box), []).append(r)
    cx, cy, tips = [], [], []
    for box, group in boxes.items():
        x0, y0, x1, y1 = (v * scale for v in box)
        colour = confidence_colour(min((r.confidence for r in group if r.confidence is not None), default=None))
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color=colour, width=2))
        label = " · ".join(r.label + ("" if r.confidence is None else f" {r.confidence:.2f}") for r in group)
        fig.add_annotation(x=x0, y=y0, text=html.escape(label, quote=False), showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(color="white", size=11), bgcolor=colour,
                           opacity=0.9)
        for r in group:
            cx.append((x0 + x1) / 2)
            cy.append((y0 + y1) / 2)
            tips.append(f"<b>{html.escape(r.label, quote=False)}</b>: {html.escape(r.value, quote=False)}<br>"
                        f"read from: {html.escape(r.line, quote=False)}<br>"
                        f"confidence {'' if r.confidence is None else f'{r.confidence:.2f}'} ({html.escape(r.source)})")
    fig.add_trace(go.Scatter(x=cx, y=cy, mode="markers", marker=dict(size=18, opacity=0.01, color="#1f77b4"),
                             hovertext=tips, hovertemplate="%{hovertext}<extra></extra>", showlegend=False))
    return _layout(fig, image.shape[0])
