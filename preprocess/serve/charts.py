"""Charts as plain SVG, drawn on the server (no script, no chart library, nothing fetched): the
histograms of a selection's similarity, quality and bytes, and bars over a version's commits (items
added, bytes added, bytes held). Every bar names itself on hover (an SVG ``<title>``); bars over
commits link to that commit's own charts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
import numpy.typing as npt
from markupsafe import Markup

from preprocess.core.units import count, size

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
    most = max((b.value for b in bars), default=0.0)
    top = most or 1.0
    step = w / max(1, len(bars))
    out = [f'<svg class="chart {escape(css)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
           f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
           f'<line class="axis" x1="{LEFT}" y1="{TOP + h}" x2="{LEFT + w}" y2="{TOP + h}"/>',
           f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + h}"/>',
           f'<text class="tick" x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{_axis_label(most, fmt) if most else ""}'
           '</text>',
           f'<text class="tick" x="{LEFT - 4}" y="{TOP + h}" text-anchor="end">0</text>']
    if not most:  # no items (a filter matched none, a commit of failures only): no bogus bin nor a "1 B" axis
        out.append(f'<text class="tick empty" x="{LEFT + w / 2:.0f}" y="{TOP + h / 2:.0f}" text-anchor="middle">'
                   "none</text>")
    for i, b in enumerate(bars):
        bh = h * b.value / top
        rect = (f'<rect class="bar" x="{LEFT + i * step + 0.5:.1f}" y="{TOP + h - bh:.1f}" '
                f'width="{min(MAX_BAR, max(1.0, step - 1)):.1f}" height="{max(0.0, bh):.1f}">'
                f'<title>{escape(b.label)}</title></rect>')
        out.append(f'<a href="{escape(b.href)}">{rect}</a>' if b.href else rect)
    # the last label ends under the last bar: two commits' bars stand left of the middle, their label was far right
    last = LEFT + (len(bars) - 1) * step + 0.5 + min(MAX_BAR, max(1.0, step - 1)) if bars else LEFT + w
    out += [f'<text class="tick" x="{LEFT}" y="{HEIGHT - 8}" text-anchor="start">{escape(ticks[0])}</text>',
            f'<text class="tick" x="{max(last, LEFT + 60):.1f}" y="{HEIGHT - 8}" text-anchor="end">'
            f'{escape(ticks[1]) if ticks[1] != ticks[0] else ""}</text>',
            "</svg>"]
    return Markup("".join(out))  # every value in it is escaped above


@dataclass(frozen=True)
class Histogram:
    """Counts of a column's values in equal bins (NaN left out and counted). ``whole``: the values are whole
    numbers (quality) and so are the bins: bin ``i`` holds ``edges[i]`` to ``edges[i + 1] - 1``, both included."""

    name: str
    edges: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]
    missing: int
    fmt: Callable[[float], str]
    whole: bool = False
    lowest: float = 0.0  # the smallest and largest value counted (the axis's ends)
    highest: float = 0.0

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def ranges(self) -> list[str]:
        """What each bin holds, in words: ``88–90`` (whole numbers, no two bins share one), else ``a to b``."""
        pairs = zip(self.edges[:-1].tolist(), self.edges[1:].tolist(), strict=True)
        if not self.whole:
            return [f"{self.fmt(lo)} to {self.fmt(hi)}" for lo, hi in pairs]
        spans = [(lo, min(hi - 1, self.highest)) for lo, hi in pairs]
        return [self.fmt(lo) if lo == hi else f"{self.fmt(lo)}\u2013{self.fmt(hi)}" for lo, hi in spans]

    def svg(self) -> Markup:
        bars = [Bar(float(c), f"{what}: {count(int(c), 'item')}")
                for what, c in zip(self.ranges(), self.counts, strict=True)] if self.total else []
        ticks = (self.fmt(self.lowest), self.fmt(self.highest)) if self.total else ("", "")
        return bars_svg(bars, title=f"{self.name}: {count(self.total, 'item')}", ticks=ticks, fmt=lambda v: str(int(v)),
                        css=f"hist-{self.name}")


FORMATS: dict[str, Callable[[float], str]] = {
    "similarity": lambda v: f"{v:.4f}",
    "quality": lambda v: f"{v:.0f}",
    "bytes": lambda v: size(int(v)),
}
WHOLE = frozenset({"quality"})  # columns of whole numbers, binned by whole numbers


def histogram(name: str, values: npt.NDArray[np.generic], bins: int = 24) -> Histogram:
    """``values``' histogram in at most ``bins`` bins: whole-number columns (:data:`WHOLE`) in bins of
    whole numbers, the same count of values each, from the smallest value up."""
    data = np.asarray(values, dtype=np.float64)
    ok = data[~np.isnan(data)]
    fmt = FORMATS.get(name, lambda v: f"{v:g}")
    if not ok.size:
        return Histogram(name, np.zeros(2), np.zeros(1, dtype=np.int64), int(data.size), fmt)
    lo, hi = float(ok.min()), float(ok.max())
    missing = int(data.size - ok.size)
    if name in WHOLE:
        first, last = math.floor(lo), math.floor(hi)
        width = math.ceil((last - first + 1) / bins)
        edges = np.arange(first, last + width + 1, width, dtype=np.float64)  # the last edge is past the largest
        counts, _ = np.histogram(np.floor(ok), bins=edges)
        return Histogram(name, edges, counts.astype(np.int64), missing, fmt, whole=True, lowest=first, highest=last)
    counts, edges = np.histogram(ok, bins=bins, range=(lo, hi if hi > lo else lo + (abs(lo) * 1e-6 or 1.0)))
    return Histogram(name, edges, counts.astype(np.int64), missing, fmt, lowest=lo, highest=hi)


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
        "items added": bars_svg([Bar(p.items, f"{p.label}: +{count(p.items, 'item')}", href(p.snapshot))
                                 for p in points],
                                title="items added per commit", ticks=ticks, fmt=lambda v: str(int(v)), css="items"),
        "bytes added": bars_svg([Bar(p.bytes, f"{p.label}: +{size(p.bytes)}", href(p.snapshot)) for p in points],
                                title="bytes added per commit", ticks=ticks, fmt=lambda v: size(int(v)), css="bytes"),
        "bytes held": bars_svg([Bar(p.held, f"{p.label}: {size(p.held)} in all", href(p.snapshot)) for p in points],
                               title="bytes the version holds after each commit", ticks=ticks,
                               fmt=lambda v: size(int(v)), css="held"),
    }
