"""Pictures of OCR results: the page with every line's box drawn over it, its text on hover."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go


def boxes_figure(image: np.ndarray, lines: list, max_width: int = 1400) -> go.Figure:
    """The page image with one outlined polygon per OCR line (hover: the line's text, escaped, and confidence)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_width / max(1, w))
    if scale < 1.0:
        import cv2

        image = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
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
    shown_h = image.shape[0]
    fig.update_layout(margin=dict(l=0, r=0, t=0, b=0), height=min(900, max(300, int(shown_h * 0.8))))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return fig
