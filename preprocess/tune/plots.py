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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from preprocess.tune.recommend import Recommendation, setting
from preprocess.tune.sweep import Sweep

# Okabe & Ito (2008), without its yellow (unreadable on white)
PALETTE = ("#000000", "#E69F00", "#0072B2", "#009E73", "#D55E00", "#56B4E9", "#CC79A7")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
FORMAT_STYLE = {"jpeg": ("#0072B2", "o"), "avif": ("#D55E00", "s"), "webp": ("#009E73", "^"),
                "jxl": ("#CC79A7", "D")}
TARGET_COLOUR = "#444444"
MAX_TITLES = 3000  # hover titles per chart
# viridis without its pale yellow end: qualities on a white background
QUALITY_CMAP = ListedColormap(mpl.colormaps["viridis"](np.linspace(0.0, 0.82, 256)), name="viridis-dark")


@dataclass
class Chart:
    """A figure being drawn, and the hover text of its points (by SVG group id)."""

    name: str  # unique in the report: the ids inside its SVG derive from it
    fig: Figure
    titles: dict[str, str] = field(default_factory=dict)

    def point(self, ax: Any, x: float, y: float, title: str, **style: Any) -> None:
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
    return Path(path).name


def _log_x(ax: Any) -> None:
    """Log x axis with a few plainly written ticks (0.2, 0.5, 1, 2 ...), none of them crowded."""
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 0.8 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _label(ax: Any, xlabel: str, ylabel: str, title: str, *, log_x: bool = False) -> None:
    """The axes' labels and title, a light grid and the legend (every chart of the report)."""
    if log_x:
        _log_x(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _target_line(ax: Any, target: float) -> None:
    ax.axhline(target, color=TARGET_COLOUR, lw=1, ls=(0, (2, 2)), label=f"target {target:g}")


def _at(sims: np.ndarray, percentile: float) -> np.ndarray:
    at: np.ndarray = np.percentile(sims, percentile, axis=-1)
    return at


def _style(i: int) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}


def _mb(n: float) -> str:
    return f"{n / 1e6:,.3f} MB"


def formats(sweep: Sweep, recs: Sequence[Recommendation], size: int, name: str = "formats") -> str:
    """Every swept coding at ``size``: total stored bytes vs similarity at the percentile, one line per
    coding over the qualities; each format's adaptive expectation (when at this size) as a ringed point."""
    rec0 = recs[0]
    m = next(x for x in sweep.models if x.name == rec0.model)
    sims = m.values(rec0.gauge)
    si = sweep.sizes.index(size)
    chart = Chart(name, Figure(figsize=(8.6, 5.0)))
    ax = chart.fig.add_subplot()
    for ci, coding in enumerate(sweep.codings):
        colour, marker = FORMAT_STYLE[coding.format]
        style = "-" if ci == sweep.of_format(coding.format)[0] else "--"
        pts = [setting(sweep, sims, (ci, si, qi), rec0.percentile) for qi in range(len(sweep.qualities))]
        ax.plot([p.total_bytes / 1e6 for p in pts], [p.at_percentile for p in pts], style, color=colour, lw=1.2,
                marker=marker, ms=4, label=coding.label)
        for p in pts:
            chart.point(ax, p.total_bytes / 1e6, p.at_percentile,
                        f"{coding.label} q{p.quality} at {size} px: {_mb(p.total_bytes)} "
                        f"({p.total_bytes / sweep.source_bytes:.1%} of the sources), p{rec0.percentile:g} "
                        f"{p.at_percentile:.4f}, median {p.median:.4f}", marker=marker, ms=9, color=colour, alpha=0.0)
    for rec in recs:
        a = rec.adaptive
        if a is None or a.size != size:
            continue
        colour = FORMAT_STYLE[rec.format][0]
        chart.point(ax, a.total_bytes / 1e6, a.at_percentile,
                    f"{rec.format} adaptive q{a.ladder.min}..q{a.max_quality} at {size} px (expected): "
                    f"{_mb(a.total_bytes)} ({a.total_bytes / sweep.source_bytes:.1%} of the sources), "
                    f"p{rec.percentile:g} {a.at_percentile:.4f}", marker="*", ms=15, color=colour,
                    markeredgecolor="black", markeredgewidth=0.8)
    ax.plot([], [], "*", color="#888888", markeredgecolor="black", ms=10, label="adaptive (expected)")
    _target_line(ax, rec0.target)
    _label(ax, "total stored MB (log)", f"similarity at p{rec0.percentile:g} ({rec0.gauge})",
           f"bytes vs similarity per format at {size} px ({rec0.model})", log_x=True)
    return chart.svg()


def rate_fidelity(sweep: Sweep, rec: Recommendation, name: str) -> str:
    """Per gauge of the recommendation's model (its format's primary coding): similarity at the
    percentile (solid) and median (dashed) vs total bytes, one line per size."""
    m = next(x for x in sweep.models if x.name == rec.model)
    ci = rec.codings[0]
    gauges = m.gauges()
    cols, rows = min(len(gauges), 2), (len(gauges) + 1) // 2
    chart = Chart(name, Figure(figsize=(5.4 * cols, 3.8 * rows)))
    mb = sweep.bytes[ci].sum(axis=2) / 1e6  # [size, quality]
    for gi, g in enumerate(gauges):
        ax = chart.fig.add_subplot(rows, cols, gi + 1)
        sims = m.values(g)[ci]
        at, med = _at(sims, rec.percentile), np.median(sims, axis=2)
        for si, size in enumerate(sweep.sizes):
            st = _style(si)
            ax.plot(mb[si], at[si], "-", ms=4, label=f"{size} px", **st)
            ax.plot(mb[si], med[si], "--", lw=0.8, color=st["color"])
            for qi, q in enumerate(sweep.qualities):
                chart.point(ax, mb[si, qi], at[si, qi], f"{size} px q{q}: {mb[si, qi]:.3f} MB, p{rec.percentile:g} "
                            f"{at[si, qi]:.4f}, median {med[si, qi]:.4f}", marker="o", ms=8, alpha=0.0)
        _target_line(ax, rec.target)
        if rec.single is not None and g == rec.gauge:
            ax.plot(rec.single.total_bytes / 1e6, rec.single.at_percentile, "*", ms=14, color="#D55E00",
                    markeredgecolor="black", label=f"single q{rec.single.quality}")
        _label(ax, "total stored MB (log)", f"p{rec.percentile:g} (solid) / median (dashed)",
               f"{sweep.codings[ci].label}: {m.name} {g}", log_x=True)
    chart.fig.tight_layout()
    return chart.svg()


def pareto_front(sweep: Sweep, rec: Recommendation, name: str) -> str:
    m = next(x for x in sweep.models if x.name == rec.model)
    sims = m.values(rec.gauge)
    chart = Chart(name, Figure(figsize=(7.4, 4.4)))
    ax = chart.fig.add_subplot()
    for si, size in enumerate(sweep.sizes):
        st = _style(si)
        for k, ci in enumerate(rec.codings):
            pts = [setting(sweep, sims, (ci, si, qi), rec.percentile) for qi in range(len(sweep.qualities))]
            ax.plot([], [], linestyle="none", ms=5, label=f"{size} px" + (f" {sweep.codings[ci].label}" if k else ""),
                    color=st["color"], marker=MARKERS[(si + k) % len(MARKERS)])
            for p in pts:
                chart.point(ax, p.total_bytes / 1e6, p.at_percentile,
                            f"{p.coding} q{p.quality} at {size} px: {_mb(p.total_bytes)}, p{rec.percentile:g} "
                            f"{p.at_percentile:.4f}", ms=5, color=st["color"], marker=MARKERS[(si + k) % len(MARKERS)])
    front = rec.pareto
    ax.plot([p.total_bytes / 1e6 for p in front], [p.at_percentile for p in front], "-", color="#000000", lw=1,
            label="Pareto front")
    _target_line(ax, rec.target)
    if rec.single is not None and rec.adaptive is not None:
        ax.plot(rec.single.total_bytes / 1e6, rec.single.at_percentile, "*", ms=15, color="#D55E00",
                markeredgecolor="black", label=f"single q{rec.single.quality} @ {rec.single.size}")
        ax.plot(rec.adaptive.total_bytes / 1e6, rec.adaptive.at_percentile, "D", ms=8, color="#56B4E9",
                markeredgecolor="black", label="adaptive (expected)")
    _label(ax, "total stored MB (log)", f"similarity at p{rec.percentile:g} ({rec.gauge})",
           f"{rec.format}, size x quality: bytes vs similarity ({rec.model})", log_x=True)
    return chart.svg()


def per_image(sweep: Sweep, rec: Recommendation, name: str) -> str:
    """At the chosen size, the single setting's coding: every image at every quality (bits per pixel
    vs similarity), each point named; the adaptive choices ringed."""
    m = next(x for x in sweep.models if x.name == rec.model)
    size = rec.size if rec.size is not None else sweep.sizes[-1]
    si = sweep.sizes.index(size)
    ci = next((c for c in rec.codings if rec.single and sweep.codings[c].label == rec.single.coding), rec.codings[0])
    sims = m.values(rec.gauge)[ci, si]  # [quality, image]
    bpp = 8 * sweep.bytes[ci, si] / np.maximum(sweep.pixels()[si], 1)[None, :]
    chart = Chart(name, Figure(figsize=(7.4, 4.4)))
    ax = chart.fig.add_subplot()
    norm = Normalize(min(sweep.qualities), max(sweep.qualities))
    for qi, qv in enumerate(sweep.qualities):
        colour = QUALITY_CMAP(norm(qv))
        for i, im in enumerate(sweep.images):
            chart.point(ax, bpp[qi, i], sims[qi, i], f"{_name(im.path)} q{qv}: {int(sweep.bytes[ci, si, qi, i]):,} B, "
                        f"{bpp[qi, i]:.3f} bits/px, similarity {sims[qi, i]:.4f}", marker="o", ms=4, color=colour)
    chart.fig.colorbar(ScalarMappable(norm=norm, cmap=QUALITY_CMAP), ax=ax, label=f"{sweep.codings[ci].label} quality")
    if rec.adaptive is not None:
        for c in rec.adaptive.choices:
            if c.coding == ci:
                qi = sweep.qualities.index(c.quality)
                chart.point(ax, bpp[qi, c.index], sims[qi, c.index],
                            f"{_name(c.path)}: adaptive choice q{c.quality}, {c.bytes:,} B, similarity "
                            f"{c.similarity:.4f}", marker="o", ms=10, markerfacecolor="none",
                            markeredgecolor="#D55E00", markeredgewidth=1.4)
        ax.plot([], [], "o", ms=10, markerfacecolor="none", markeredgecolor="#D55E00", label="adaptive choice")
    _target_line(ax, rec.target)
    _label(ax, "bits per pixel (log)", f"similarity ({rec.gauge})",
           f"each image at {size} px, {sweep.codings[ci].label} ({rec.model})", log_x=True)
    return chart.svg()


def neighbours(sweep: Sweep, rec: Recommendation, name: str) -> str:
    ci = rec.codings[0]
    chart = Chart(name, Figure(figsize=(7.4, 3.8)))
    ax = chart.fig.add_subplot()
    for mi, m in enumerate(sweep.models):
        style = "-" if mi == 0 else "--"
        for si, size in enumerate(sweep.sizes):
            st = _style(si)
            ax.plot(sweep.qualities, m.topk[ci, si], style, ms=4, label=f"{m.name} {size} px: top-{m.k}", **st)
            ax.plot(sweep.qualities, m.top1[ci, si], ":", lw=0.8, color=st["color"], marker="x", ms=4)
    agreement = np.concatenate([np.ravel(m.top1[ci]) for m in sweep.models])
    measured = agreement[np.isfinite(agreement)]  # NaN with fewer than 2 images
    ax.set_ylim(max(0.0, float(measured.min()) - 0.05 if measured.size else 0.0) - 0.01, 1.01)
    _label(ax, f"{sweep.codings[ci].label} quality", "neighbour agreement (top-k solid, x top-1 dotted)",
           "do nearest neighbours survive compression?")
    ax.legend(fontsize=6, loc="lower right")
    return chart.svg()


def views_and_models(sweep: Sweep, rec: Recommendation, name: str) -> str:
    """At the chosen size: similarity at the percentile vs quality, for every model and gauge."""
    size = rec.size if rec.size is not None else sweep.sizes[-1]
    si, ci = sweep.sizes.index(size), rec.codings[0]
    chart = Chart(name, Figure(figsize=(7.4, 4.4)))
    ax = chart.fig.add_subplot()
    styles = {"whole": "-", "tiles-min": ":", "tiles-p10": "--", "tiles-mean": "-."}
    for mi, m in enumerate(sweep.models):
        for gi, g in enumerate(m.gauges()):
            at = _at(m.values(g)[ci, si], rec.percentile)
            ax.plot(sweep.qualities, at, styles[g], color=PALETTE[(2 + mi * 2) % len(PALETTE)],
                    marker=MARKERS[gi], ms=4, label=f"{m.name} {g}")
    _target_line(ax, rec.target)
    _label(ax, f"{sweep.codings[ci].label} quality", f"similarity at p{rec.percentile:g}",
           f"what each model and view calls safe at {size} px")
    return chart.svg()
