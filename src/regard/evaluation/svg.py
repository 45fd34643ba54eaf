"""Hand-drawn inline SVG charts: line charts on linear, log10 or probit axes, and horizontal bar
charts with confidence whiskers.

Why by hand: the HTML report must be one self-contained file a reviewer can open anywhere (no
JavaScript, no network, no matplotlib in the service's dependencies), and DET curves need a probit
axis that plotting libraries rarely offer. Every string that reaches the SVG goes through
``html.escape``: group names and file names come from the evaluated data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from statistics import NormalDist
from typing import Sequence

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
_ND = NormalDist()


def _fmt(v: float) -> str:
    return f"{v:.1f}"


@dataclass(frozen=True)
class Scale:
    """Maps a value to [0, 1] along an axis. kind: ``linear``, ``log10`` or ``probit``."""

    kind: str
    lo: float
    hi: float

    def _t(self, v: float) -> float:
        if self.kind == "log10":
            return math.log10(max(v, self.lo))
        if self.kind == "probit":
            p = min(max(v, self.lo), self.hi)
            return _ND.inv_cdf(p)
        return v

    def __call__(self, v: float) -> float:
        a, b = self._t(self.lo), self._t(self.hi)
        return 0.0 if b == a else (self._t(min(max(v, self.lo), self.hi)) - a) / (b - a)

    def ticks(self) -> list[tuple[float, str]]:
        if self.kind == "log10":
            first, last = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
            return [(10.0 ** e, f"1e{e}" if e < -2 else f"{10.0 ** e:g}")
                    for e in range(first, last + 1) if self.lo <= 10.0 ** e <= self.hi]
        if self.kind == "probit":
            cands = [1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999]
            return [(c, f"{c:g}") for c in cands if self.lo <= c <= self.hi]
        span = self.hi - self.lo
        step = 10 ** math.floor(math.log10(span / 4)) if span > 0 else 1
        for mult in (1, 2, 2.5, 5, 10):
            if span / (step * mult) <= 6:
                step *= mult
                break
        start = math.ceil(self.lo / step) * step
        ticks, v = [], start
        while v <= self.hi + 1e-12:
            ticks.append((v, f"{v:.10g}"))
            v += step
        return ticks


@dataclass
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    color: str = PALETTE[0]
    dashed: bool = False


@dataclass
class Bar:
    label: str
    value: float | None
    low: float | None = None
    high: float | None = None
    text: str = ""
    color: str = PALETTE[0]


@dataclass
class Frame:
    width: int = 620
    height: int = 360
    left: int = 70
    right: int = 20
    top: int = 48
    bottom: int = 52
    extra: list[str] = field(default_factory=list)

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> float:
        return self.height - self.top - self.bottom


def _open(frame: Frame, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{frame.width}" height="{frame.height}" '
        f'viewBox="0 0 {frame.width} {frame.height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{frame.width}" height="{frame.height}" fill="#fff"/>',
        f'<text x="{frame.width / 2:.1f}" y="20" text-anchor="middle" font-size="14" '
        f'font-weight="bold">{escape(title)}</text>',
    ]


def line_chart(title: str, series: Sequence[Series], x: Scale, y: Scale, x_label: str,
               y_label: str, *, verticals: Sequence[tuple[float, str]] = (),
               markers: Sequence[tuple[float, float, str]] = (),
               frame: Frame | None = None, note: str = "") -> str:
    """Polylines of (x, y) points; points outside the axes are clamped to the edge.
    ``markers``: labelled dots (x, y, label), e.g. operating points."""
    f = frame or Frame()
    px = lambda v: f.left + x(v) * f.plot_w  # noqa: E731
    py = lambda v: f.top + (1 - y(v)) * f.plot_h  # noqa: E731
    out = _open(f, title)
    out.append(f'<rect x="{f.left}" y="{f.top}" width="{f.plot_w:.1f}" height="{f.plot_h:.1f}" '
               'fill="none" stroke="#444"/>')
    last = -1e9
    for v, label in x.ticks():
        xx = px(v)
        if xx - last < 6.5 * len(label) + 8:  # no overlapping tick labels
            continue
        last = xx
        out.append(f'<line x1="{_fmt(xx)}" y1="{f.top}" x2="{_fmt(xx)}" '
                   f'y2="{_fmt(f.top + f.plot_h)}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{_fmt(xx)}" y="{_fmt(f.top + f.plot_h + 15)}" text-anchor="middle" '
                   f'font-size="11">{escape(label)}</text>')
    for v, label in y.ticks():
        yy = py(v)
        out.append(f'<line x1="{f.left}" y1="{_fmt(yy)}" x2="{_fmt(f.left + f.plot_w)}" '
                   f'y2="{_fmt(yy)}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{f.left - 5}" y="{_fmt(yy + 4)}" text-anchor="end" '
                   f'font-size="11">{escape(label)}</text>')
    for v, label in verticals:
        xx = px(v)
        out.append(f'<line x1="{_fmt(xx)}" y1="{f.top}" x2="{_fmt(xx)}" '
                   f'y2="{_fmt(f.top + f.plot_h)}" stroke="#999" stroke-dasharray="3,3"/>')
        out.append(f'<text x="{_fmt(xx + 3)}" y="{f.top + 12}" font-size="10" '
                   f'fill="#555">{escape(label)}</text>')
    lx = float(f.left)
    for i, s in enumerate(series):
        pts = " ".join(f"{_fmt(px(a))},{_fmt(py(b))}" for a, b in s.points)
        if pts:
            dash = ' stroke-dasharray="6,4"' if s.dashed else ""
            out.append(f'<polyline points="{pts}" fill="none" stroke="{escape(s.color)}" '
                       f'stroke-width="2"{dash}/>')
        # legend: one row above the plot, never over the data
        ly = f.top - 8
        out.append(f'<line x1="{_fmt(lx)}" y1="{ly}" x2="{_fmt(lx + 18)}" y2="{ly}" '
                   f'stroke="{escape(s.color)}" stroke-width="2"/>')
        out.append(f'<text x="{_fmt(lx + 22)}" y="{ly + 4}" font-size="11">{escape(s.name)}</text>')
        lx += 22 + 6.2 * len(s.name) + 16
    for a, b, label in markers:
        out.append(f'<circle cx="{_fmt(px(a))}" cy="{_fmt(py(b))}" r="3.5" fill="#000"/>')
        out.append(f'<text x="{_fmt(px(a) + 5)}" y="{_fmt(py(b) - 5)}" font-size="10">'
                   f'{escape(label)}</text>')
    out.append(f'<text x="{_fmt(f.left + f.plot_w / 2)}" y="{f.height - 20}" '
               f'text-anchor="middle" font-size="12">{escape(x_label)}</text>')
    out.append(f'<text x="14" y="{_fmt(f.top + f.plot_h / 2)}" text-anchor="middle" '
               f'font-size="12" transform="rotate(-90 14 {_fmt(f.top + f.plot_h / 2)})">'
               f'{escape(y_label)}</text>')
    if note:
        out.append(f'<text x="{f.left}" y="{f.height - 4}" font-size="10" '
                   f'fill="#555">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(title: str, bars: Sequence[Bar], x_label: str, *, x_max: float | None = None,
              label_width: int = 170, width: int = 640, note: str = "") -> str:
    """Horizontal bars with 95 % whiskers (low..high) and a text per bar; a bar whose value is
    None is drawn as "no data". Bars with value 0 show only their whisker (the upper bound)."""
    row = 22
    f = Frame(width=width, height=56 + row * max(len(bars), 1) + 30, left=label_width,
              right=150, top=36, bottom=40)
    highs = [b.high if b.high is not None else (b.value or 0) for b in bars]
    top = x_max or max([h for h in highs if h is not None] + [1e-9])
    scale = Scale("linear", 0.0, top * 1.05)
    px = lambda v: f.left + scale(v) * f.plot_w  # noqa: E731
    out = _open(f, title)
    for v, label in scale.ticks():
        xx = px(v)
        out.append(f'<line x1="{_fmt(xx)}" y1="{f.top}" x2="{_fmt(xx)}" '
                   f'y2="{_fmt(f.top + row * len(bars))}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{_fmt(xx)}" y="{_fmt(f.top + row * len(bars) + 14)}" '
                   f'text-anchor="middle" font-size="10">{escape(label)}</text>')
    for i, b in enumerate(bars):
        y0 = f.top + i * row
        cy = y0 + row / 2
        out.append(f'<text x="{f.left - 6}" y="{_fmt(cy + 4)}" text-anchor="end" '
                   f'font-size="11">{escape(b.label)}</text>')
        if b.value is None:
            out.append(f'<text x="{f.left + 4}" y="{_fmt(cy + 4)}" font-size="11" '
                       f'fill="#888">no data</text>')
            continue
        out.append(f'<rect x="{f.left}" y="{_fmt(y0 + 4)}" '
                   f'width="{_fmt(max(px(b.value) - f.left, 0))}" height="{row - 8}" '
                   f'fill="{escape(b.color)}" fill-opacity="0.75"/>')
        if b.low is not None and b.high is not None:
            x1, x2 = px(b.low), px(b.high)
            out.append(f'<line x1="{_fmt(x1)}" y1="{_fmt(cy)}" x2="{_fmt(x2)}" y2="{_fmt(cy)}" '
                       'stroke="#222" stroke-width="1.5"/>')
            for xx in (x1, x2):
                out.append(f'<line x1="{_fmt(xx)}" y1="{_fmt(cy - 5)}" x2="{_fmt(xx)}" '
                           f'y2="{_fmt(cy + 5)}" stroke="#222" stroke-width="1.5"/>')
        out.append(f'<text x="{_fmt(f.left + f.plot_w + 6)}" y="{_fmt(cy + 4)}" '
                   f'font-size="10">{escape(b.text)}</text>')
    out.append(f'<text x="{_fmt(f.left + f.plot_w / 2)}" y="{f.height - 22}" '
               f'text-anchor="middle" font-size="12">{escape(x_label)}</text>')
    if note:
        out.append(f'<text x="6" y="{f.height - 6}" font-size="10" '
                   f'fill="#555">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out)
