"""Small inline-SVG charts for the HTML report: no plotting library, no network.

Every function returns one ``<svg>`` element as a string, sized in CSS pixels, with
its text escaped.  Axes are linear; values beyond a chart's cap are drawn at the cap
(the caption says so).

>>> s = line_chart([0, 10, 20], [("ks", [0.1, 2.0, 0.3], "#d62728")], threshold=1.0)
>>> s.startswith("<svg") and "polyline" in s and "threshold" in s
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

#: colours of successive lines (Tableau 10)
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
REFERENCE = "#9aa5b1"
RECENT = "#e4572e"
MARGIN = (44, 12, 22, 26)  # left, right, top, bottom


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    out, v = [], first
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


class _Frame:
    """Maps data to pixels inside the plot area of a ``width`` x ``height`` chart."""

    def __init__(self, width: int, height: int, x0: float, x1: float, y0: float,
                 y1: float) -> None:
        self.w, self.h = width, height
        left, right, top, bottom = MARGIN
        self.l, self.r, self.t, self.b = left, width - right, top, height - bottom
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1

    def x(self, v: float) -> float:
        return self.l + (v - self.x0) / (self.x1 - self.x0) * (self.r - self.l)

    def y(self, v: float) -> float:
        v = min(max(v, self.y0), self.y1)
        return self.b - (v - self.y0) / (self.y1 - self.y0) * (self.b - self.t)

    def axes(self, title: str = "", x_label: bool = True) -> list[str]:
        out = [f'<rect x="{self.l}" y="{self.t}" width="{self.r - self.l}" '
               f'height="{self.b - self.t}" fill="#fff" stroke="#d0d7de"/>']
        for v in _ticks(self.y0, self.y1, 4):
            py = self.y(v)
            out.append(f'<line x1="{self.l}" x2="{self.r}" y1="{py:.1f}" y2="{py:.1f}" '
                       f'stroke="#eef1f4"/>')
            out.append(f'<text x="{self.l - 4}" y="{py + 3:.1f}" text-anchor="end">'
                       f'{_fmt(v)}</text>')
        if x_label:
            for v in _ticks(self.x0, self.x1, 6):
                px = self.x(v)
                out.append(f'<text x="{px:.1f}" y="{self.b + 14}" text-anchor="middle">'
                           f'{_fmt(v)}</text>')
        if title:
            out.append(f'<text x="{self.l}" y="{self.t - 7}" class="t">{escape(title)}</text>')
        return out


def _svg(width: int, height: int, body: Sequence[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
            + "".join(body) + "</svg>")


def line_chart(x: Sequence[float], lines: Sequence[tuple[str, Sequence[float], str]],
               threshold: float | None = None, spans: Sequence[tuple[float, float]] = (),
               x_range: tuple[float, float] | None = None, y_max: float | None = None,
               width: int = 560, height: int = 170, title: str = "",
               cap: float = math.inf) -> str:
    """Lines ``(label, values, colour)`` over positions ``x``; an optional dashed
    ``threshold``; ``spans`` (x0, x1) shaded (episodes); values above ``cap`` drawn at it."""
    xs = [float(v) for v in x]
    lo, hi = x_range or ((xs[0], xs[-1]) if xs else (0.0, 1.0))
    top = max([max((float(v) for v in vals), default=0.0) for _, vals, _ in lines] or [0.0])
    top = min(top, cap)
    if threshold is not None:
        top = max(top, threshold * 1.25)
    f = _Frame(width, height, lo, hi, 0.0, y_max if y_max is not None else (top * 1.05 or 1.0))
    body = f.axes(title)
    for a, b in spans:
        pa, pb = f.x(max(a, lo)), f.x(min(b, hi))
        body.append(f'<rect x="{pa:.1f}" y="{f.t}" width="{max(pb - pa, 1.5):.1f}" '
                    f'height="{f.b - f.t}" fill="#fde2dc" opacity="0.7"/>')
    for label, vals, colour in lines:
        pts = " ".join(f"{f.x(a):.1f},{f.y(min(float(v), cap)):.1f}"
                       for a, v in zip(xs, vals, strict=True))
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.4" '
                    f'points="{pts}"><title>{escape(label)}</title></polyline>')
    if threshold is not None:
        py = f.y(threshold)
        body.append(f'<line class="threshold" x1="{f.l}" x2="{f.r}" y1="{py:.1f}" '
                    f'y2="{py:.1f}" stroke="#b00020" stroke-dasharray="5,3"/>')
        body.append(f'<text x="{f.r - 2}" y="{py - 3:.1f}" text-anchor="end" '
                    f'fill="#b00020">threshold</text>')
    lx = f.l + 6
    for label, _, colour in lines[:8]:
        body.append(f'<rect x="{lx}" y="{f.t + 5}" width="10" height="3" fill="{colour}"/>'
                    f'<text x="{lx + 13}" y="{f.t + 10}">{escape(label)}</text>')
        lx += 18 + 6 * len(label)
    return _svg(width, height, body, title or "line chart")


def timeline(rows: Sequence[tuple[str, Sequence[tuple[float, float, float]]]],
             x_range: tuple[float, float], width: int = 1100, title: str = "") -> str:
    """One row per column, a bar per episode ``(open, close, peak score)``; the darker,
    the higher the peak score."""
    row_h = 18
    height = MARGIN[2] + MARGIN[3] + row_h * max(len(rows), 1) + 4
    label_w = min(220, 16 + 7 * max((len(r[0]) for r in rows), default=4))
    f = _Frame(width, height, x_range[0], x_range[1], 0.0, 1.0)
    f.l = label_w
    body = [f'<rect x="{f.l}" y="{f.t}" width="{f.r - f.l}" height="{f.b - f.t}" '
            f'fill="#fff" stroke="#d0d7de"/>']
    for v in _ticks(x_range[0], x_range[1], 8):
        px = f.x(v)
        body.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{f.t}" y2="{f.b}" '
                    f'stroke="#eef1f4"/><text x="{px:.1f}" y="{f.b + 14}" '
                    f'text-anchor="middle">{_fmt(v)}</text>')
    for i, (label, eps) in enumerate(rows):
        y = f.t + 2 + i * row_h
        body.append(f'<text x="{f.l - 6}" y="{y + 12}" text-anchor="end">{escape(label)}</text>')
        for a, b, score in eps:
            pa, pb = f.x(a), f.x(b)
            shade = min(1.0, 0.35 + 0.65 * math.log10(max(score, 1.0) * 10) / 2)
            body.append(f'<rect x="{pa:.1f}" y="{y + 2}" width="{max(pb - pa, 2.0):.1f}" '
                        f'height="{row_h - 5}" fill="{RECENT}" fill-opacity="{shade:.2f}">'
                        f'<title>{escape(label)}: {_fmt(a)} to {_fmt(b)}, peak score '
                        f'{score:.3g}</title></rect>')
    if title:
        body.append(f'<text x="{f.l}" y="{f.t - 7}" class="t">{escape(title)}</text>')
    return _svg(width, height, body, title or "episodes timeline")


def category_bars(labels: Sequence[str], reference: Sequence[float], recent: Sequence[float],
                  width: int = 420, height: int = 190, title: str = "") -> str:
    """Shares per category: the reference (grey) beside the recent window (red)."""
    n = max(len(labels), 1)
    top = max([*reference, *recent, 0.01])
    f = _Frame(width, height, 0.0, float(n), 0.0, top * 1.1)
    body = f.axes(title, x_label=False)
    slot = (f.r - f.l) / n
    bw = max(slot * 0.38, 1.0)
    for i, lab in enumerate(labels):
        x = f.l + i * slot + slot * 0.1
        for j, (v, colour) in enumerate(((reference[i], REFERENCE), (recent[i], RECENT))):
            py = f.y(v)
            body.append(f'<rect x="{x + j * bw:.1f}" y="{py:.1f}" width="{bw:.1f}" '
                        f'height="{f.b - py:.1f}" fill="{colour}"><title>{escape(lab)}: '
                        f'{"reference" if j == 0 else "recent"} {v:.3f}</title></rect>')
        if n <= 24:
            body.append(f'<text x="{x + bw:.1f}" y="{f.b + 14}" text-anchor="middle">'
                        f'{escape(lab[:10])}</text>')
    body += _legend(f)
    return _svg(width, height, body, title or "category shares")


def histogram(edges: Sequence[float], reference: Sequence[float], recent: Sequence[float],
              width: int = 420, height: int = 190, title: str = "") -> str:
    """Densities over bins with boundaries ``edges`` (``len(reference) + 1`` of them): the
    reference as a grey area, the recent window as a red step line."""
    e = [float(v) for v in edges]
    widths = [max(b - a, 1e-12) for a, b in zip(e, e[1:], strict=False)]
    ref = [p / w for p, w in zip(reference, widths, strict=True)]
    rec = [p / w for p, w in zip(recent, widths, strict=True)]
    top = max([*ref, *rec, 1e-12])
    f = _Frame(width, height, e[0], e[-1], 0.0, top * 1.1)
    body = f.axes(title)

    def steps(d: Sequence[float]) -> str:
        pts = [f"{f.x(e[0]):.1f},{f.y(0):.1f}"]
        for i, v in enumerate(d):
            pts += [f"{f.x(e[i]):.1f},{f.y(v):.1f}", f"{f.x(e[i + 1]):.1f},{f.y(v):.1f}"]
        pts.append(f"{f.x(e[-1]):.1f},{f.y(0):.1f}")
        return " ".join(pts)

    body.append(f'<polygon points="{steps(ref)}" fill="{REFERENCE}" fill-opacity="0.55"/>')
    body.append(f'<polyline points="{steps(rec)}" fill="none" stroke="{RECENT}" '
                f'stroke-width="1.8"/>')
    body += _legend(f)
    return _svg(width, height, body, title or "histogram")


def _legend(f: _Frame) -> list[str]:
    x = f.r - 140
    return [f'<rect x="{x}" y="{f.t + 5}" width="10" height="8" fill="{REFERENCE}"/>'
            f'<text x="{x + 13}" y="{f.t + 12}">reference</text>'
            f'<rect x="{x + 72}" y="{f.t + 5}" width="10" height="8" fill="{RECENT}"/>'
            f'<text x="{x + 85}" y="{f.t + 12}">recent</text>']


def as_list(a: Any) -> list[float]:
    """A numpy array or sequence as a list of floats."""
    return [float(v) for v in a]
