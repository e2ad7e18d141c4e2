"""Charts as plain SVG, drawn on the server (no script, no chart library, nothing fetched): the
histograms of a selection's similarity, quality and bytes, and bars over a version's commits (items
added, bytes added, bytes held). Every bar names itself on hover (an SVG ``<title>``); bars over
commits link to that commit's own charts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
import numpy.typing as npt
from markupsafe import Markup

from preprocess.core.units import size

WIDTH, HEIGHT = 420, 170
LEFT, BOTTOM, TOP, RIGHT = 44, 28, 10, 10  # plot margins, px
MAX_BAR = 36  # px: a bar is never wider (a version of two commits has two slim bars, not two slabs)


@dataclass(frozen=True)
class Bar:
    value: float  # the bar's height in data units
    label: str  # what hovering says
    href: str = ""


def _axis_label(v: float, fmt: Callable[[float], str]) -> str:
    return escape(fmt(v))


def bars_svg(bars: Sequence[Bar], *, title: str, ticks: tuple[str, str], fmt: Callable[[float], str] = str,
             css: str = "") -> Markup:
    """Vertical bars, left to right, scaled to the largest; ``ticks``: the labels under the first
    and the last bar."""
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = max((b.value for b in bars), default=0.0) or 1.0
    step = w / max(1, len(bars))
    out = [f'<svg class="chart {escape(css)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
           f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
           f'<line class="axis" x1="{LEFT}" y1="{TOP + h}" x2="{LEFT + w}" y2="{TOP + h}"/>',
           f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + h}"/>',
           f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{_axis_label(top, fmt)}</text>',
           f'<text class="tick" x="{LEFT - 4}" y="{TOP + h}" text-anchor="end">0</text>']
    for i, b in enumerate(bars):
        bh = h * b.value / top
        rect = (f'<rect class="bar" x="{LEFT + i * step + 0.5:.1f}" y="{TOP + h - bh:.1f}" '
                f'width="{min(MAX_BAR, max(1.0, step - 1)):.1f}" height="{max(0.0, bh):.1f}">'
                f'<title>{escape(b.label)}</title></rect>')
        out.append(f'<a href="{escape(b.href)}">{rect}</a>' if b.href else rect)
    out += [f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}" text-anchor="start">{escape(ticks[0])}</text>',
            f'<text class="tick" x="{LEFT + w}" y="{HEIGHT - 8}" text-anchor="end">{escape(ticks[1])}</text>',
            "</svg>"]
    return Markup("".join(out))  # every value in it is escaped above


@dataclass(frozen=True)
class Histogram:
    """Counts of a column's values in equal bins (NaN left out and counted)."""

    name: str
    edges: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    missing: int
    fmt: Callable[[float], str]

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def svg(self) -> Markup:
        bars = [Bar(float(c), f"{self.fmt(lo)} to {self.fmt(hi)}: {int(c)} item{'s' if c != 1 else ''}")
                for lo, hi, c in zip(self.edges[:-1], self.edges[1:], self.counts, strict=True)]
        ticks = (self.fmt(float(self.edges[0])), self.fmt(float(self.edges[-1]))) if self.total else ("", "")
        return bars_svg(bars, title=f"{self.name}: {self.total} items", ticks=ticks, fmt=lambda v: str(int(v)),
                        css=f"hist-{self.name}")


FORMATS: dict[str, Callable[[float], str]] = {
    "similarity": lambda v: f"{v:.4f}",
    "quality": lambda v: f"{v:.0f}",
    "bytes": lambda v: size(int(v)),
}


def histogram(name: str, values: npt.NDArray[np.generic], bins: int = 24) -> Histogram:
    """``values``' histogram: integer-valued columns (quality) in bins of whole numbers."""
    data = np.asarray(values, dtype=np.float64)
    ok = data[~np.isnan(data)]
    fmt = FORMATS.get(name, lambda v: f"{v:g}")
    if not ok.size:
        return Histogram(name, np.zeros(2), np.zeros(1, dtype=np.int64), int(data.size), fmt)
    lo, hi = float(ok.min()), float(ok.max())
    if name == "quality":
        lo, hi = np.floor(lo), np.floor(hi) + 1
        bins = int(min(bins, max(1, hi - lo)))
    elif hi == lo:
        hi = lo + (abs(lo) * 1e-6 or 1.0)
    counts, edges = np.histogram(ok, bins=bins, range=(lo, hi))
    return Histogram(name, edges, counts.astype(np.int64), int(data.size - ok.size), fmt)


@dataclass(frozen=True)
class CommitPoint:
    """One commit of a version's history and what it added."""

    snapshot: str
    label: str  # when, and its message
    items: int
    bytes: int
    held: int  # bytes the version holds after it


def commit_charts(points: Sequence[CommitPoint], href: Callable[[str], str]) -> dict[str, Markup]:
    """Items added, bytes added and bytes held, one bar per commit (oldest left)."""
    if not points:
        return {}
    ticks = (points[0].label.split(" · ")[0], points[-1].label.split(" · ")[0])
    return {
        "items added": bars_svg([Bar(p.items, f"{p.label}: +{p.items} items", href(p.snapshot)) for p in points],
                                title="items added per commit", ticks=ticks, fmt=lambda v: str(int(v)), css="items"),
        "bytes added": bars_svg([Bar(p.bytes, f"{p.label}: +{size(p.bytes)}", href(p.snapshot)) for p in points],
                                title="bytes added per commit", ticks=ticks, fmt=lambda v: size(int(v)), css="bytes"),
        "bytes held": bars_svg([Bar(p.held, f"{p.label}: {size(p.held)} in all", href(p.snapshot)) for p in points],
                               title="bytes the version holds after each commit", ticks=ticks,
                               fmt=lambda v: size(int(v)), css="held"),
    }
