"""The report's figures, drawn with matplotlib (no pyplot state) as inline SVG: no scripts, and every
point a reader may ask about carries an SVG ``<title>`` (the browser shows it on hover).

Colours are Okabe-Ito's colour-blind-safe palette, always paired with a marker shape, so no series is
told apart by colour alone; log axes label only a few round values (no overlapping tick labels).
"""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from preprocess.core import names
from preprocess.tune.grid import Sweep, score_name
from preprocess.tune.recommend import Decision, Recommendation, Setting, Target, setting

# Okabe & Ito (2008), without its yellow (unreadable on white)
PALETTE = ("#000000", "#E69F00", "#0072B2", "#009E73", "#D55E00", "#56B4E9", "#CC79A7")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
FORMAT_STYLE = {"jpeg": ("#0072B2", "o"), "avif": ("#D55E00", "s"), "webp": ("#009E73", "^"),
                "jxl": ("#CC79A7", "D")}
TARGET_COLOUR = "#444444"
MAX_TITLES = 3000  # hover titles per chart
# viridis without its pale yellow end: qualities on a white background
QUALITY_CMAP = ListedColormap(mpl.colormaps["viridis"](np.linspace(0.0, 0.82, 256)), name="viridis-dark")


class Marker(TypedDict, total=False):
    """How a point is drawn (matplotlib's keywords)."""

    marker: str
    ms: float
    color: str | tuple[float, ...]
    alpha: float
    markeredgecolor: str
    markeredgewidth: float
    markerfacecolor: str


@dataclass
class Chart:
    """A figure being drawn, and the hover text of its points (by SVG group id)."""

    name: str  # unique in the report: the ids inside its SVG derive from it
    fig: Figure
    titles: dict[str, str] = field(default_factory=dict)

    def point(self, ax: Axes, x: float, y: float, title: str, **style: Unpack[Marker]) -> None:
        """One marker with a hover title (the first MAX_TITLES of a chart: a large sample's SVG stays small)."""
        if len(self.titles) >= MAX_TITLES:
            ax.plot([x], [y], linestyle="none", **style)
            return
        gid = f"{self.name}-pt{len(self.titles)}"
        ax.plot([x], [y], linestyle="none", gid=gid, **style)
        self.titles[gid] = title

    def svg(self) -> str:
        """The figure as an ``<svg class="plot">`` element to inline in HTML."""
        buf = io.BytesIO()
        with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": self.name}):
            self.fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
        text = buf.getvalue().decode()
        text = text[text.index("<svg"):]
        for gid, title in self.titles.items():
            text = text.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{html.escape(title)}</title>', 1)
        text = re.sub(r'<svg ', f'<svg class="plot" id="{self.name}" role="img" ', text, count=1)
        return re.sub(r"<metadata>.*?</metadata>", "", text, count=1, flags=re.DOTALL)


def _name(path: str) -> str:
    """A file's name as the report prints it (:func:`~preprocess.core.names.quote`: one printable UTF-8 line)."""
    return names.quote(Path(path).name)


def _log_x(ax: Axes) -> None:
    """Log x axis with a few plainly written ticks (0.2, 0.5, 1, 2 ...), none of them crowded."""
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 0.8 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _label(ax: Axes, xlabel: str, ylabel: str, title: str, *, log_x: bool = False) -> None:
    """The axes' labels and title, a light grid and the legend (every chart of the report)."""
    if log_x:
        _log_x(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _target_line(ax: Axes, target: float) -> None:
    ax.axhline(target, color=TARGET_COLOUR, lw=1, ls=(0, (2, 2)), label=f"target {target:g}")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.3f} MB"


def _curve(sweep: Sweep, decision: Decision, fmt: str, si: int) -> list[Setting]:
    """Format ``fmt`` at size ``si`` at every similarity the search bracketed (the decision's percentile)."""
    t = decision.target
    m = sweep.model(t.model)
    band = sorted(set(sweep.band) | {t.similarity})
    return [setting(sweep, m, fmt, si, Target(b, t.percentile, t.model, t.gauge)) for b in band]


def formats(sweep: Sweep, decision: Decision, name: str = "formats") -> str:
    """Per format and size: the bytes each similarity of the band costs (a setting per similarity, at the
    decision's percentile; a setting whose flagged images keep it below its similarity lies below the
    line); the decision starred, the runner-up a diamond."""
    t = decision.target
    chart = Chart(name, Figure(figsize=(8.6, 5.0)))
    ax = chart.fig.add_subplot()
    dashes = ["-", "--", ":", "-."]
    for fmt in sweep.formats:
        colour, marker = FORMAT_STYLE[fmt]
        for si, size in enumerate(sweep.sizes):
            pts = _curve(sweep, decision, fmt, si)
            ax.plot([p.total_bytes / 1e6 for p in pts], [p.at_percentile for p in pts], dashes[si % len(dashes)],
                    color=colour, lw=1.2, marker=marker, ms=4, label=f"{fmt} at {size} px")
            for p in pts:
                chart.point(ax, p.total_bytes / 1e6, p.at_percentile,
                            f"{fmt} at {size} px, p{t.percentile:g} {p.at_percentile:.4f}: {_mb(p.total_bytes)} "
                            f"({p.total_bytes / sweep.source_bytes:.1%} of the sources), {p.below_target} flagged",
                            marker=marker, ms=9, color=colour, alpha=0.0)
    for s, mark, what in ((decision.best, "*", "decision"), (decision.runner_up, "D", "runner-up")):
        if s is None:
            continue
        chart.point(ax, s.total_bytes / 1e6, s.at_percentile,
                    f"{what}: {s.label}, {_mb(s.total_bytes)} ({s.total_bytes / sweep.source_bytes:.1%} of the "
                    f"sources), p{t.percentile:g} {s.at_percentile:.4f}", marker=mark, ms=15 if mark == "*" else 9,
                    color=FORMAT_STYLE[s.format][0], markeredgecolor="black", markeredgewidth=0.8)
        ax.plot([], [], mark, color="#888888", markeredgecolor="black", ms=10, label=what)
    _target_line(ax, t.similarity)
    _label(ax, "total stored MB (log)", f"{score_name(t.gauge)} at p{t.percentile:g} ({t.gauge})",
           f"bytes per similarity, every format and size ({sweep.model(t.model).name})",
           log_x=True)
    return chart.svg()


def per_image(sweep: Sweep, rec: Recommendation, name: str) -> str:
    """At the recommended size, the format's primary coding: every image's measured points (bits per
    pixel vs similarity, one thin line per image through its qualities, each point named); the choices
    ringed."""
    m = sweep.model(rec.model)
    s = rec.setting
    size = s.size if s is not None else sweep.sizes[0]
    si, ci = sweep.sizes.index(size), rec.codings[0]
    sims = m.values(rec.gauge)[ci, si]  # [quality, image]
    bpp = 8 * sweep.bytes[ci, si] / np.maximum(sweep.pixels()[si], 1)[None, :]
    chart = Chart(name, Figure(figsize=(7.4, 4.4)))
    ax = chart.fig.add_subplot()
    norm = Normalize(min(sweep.qualities), max(sweep.qualities))
    for i, im in enumerate(sweep.images):
        done = [qi for qi in range(len(sweep.qualities)) if np.isfinite(sims[qi, i])]
        ax.plot(bpp[done, i], sims[done, i], "-", color="#bbbbbb", lw=0.6, zorder=1)
        for qi in done:
            qv = sweep.qualities[qi]
            chart.point(ax, float(bpp[qi, i]), float(sims[qi, i]),
                        f"{_name(im.path)} q{qv}: {int(sweep.bytes[ci, si, qi, i]):,} B, {bpp[qi, i]:.3f} bits/px, "
                        f"similarity {sims[qi, i]:.4f}", marker="o", ms=4, color=QUALITY_CMAP(norm(qv)))
    chart.fig.colorbar(ScalarMappable(norm=norm, cmap=QUALITY_CMAP), ax=ax, label=f"{sweep.codings[ci].label} quality")
    for c in s.choices if s is not None else []:
        if c.coding == ci:
            qi = sweep.qualities.index(c.quality)
            chart.point(ax, float(bpp[qi, c.index]), float(sims[qi, c.index]),
                        f"{_name(c.path)}: chosen q{c.quality}, {c.bytes:,} B, similarity {c.similarity:.4f}",
                        marker="o", ms=10, markerfacecolor="none", markeredgecolor="#D55E00", markeredgewidth=1.4)
    ax.plot([], [], "o", ms=10, markerfacecolor="none", markeredgecolor="#D55E00", label="chosen")
    _target_line(ax, rec.target)
    _label(ax, "bits per pixel (log)", f"similarity ({rec.gauge})",
           f"each image at {size} px, {sweep.codings[ci].label} ({rec.model})", log_x=True)
    return chart.svg()
