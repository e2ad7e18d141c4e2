"""The report's figures, drawn with matplotlib (Agg, no pyplot state) and returned as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from preprocess.tune.recommend import Recommendation, pareto, setting
from preprocess.tune.sweep import Sweep

_DPI = 110


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def _label(ax: Any, xlabel: str, ylabel: str, title: str, *, log_x: bool = False, legend: int = 7) -> None:
    """The axes' labels and title, a light grid and the legend (every line chart of the report)."""
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend, loc="lower right")


def _target_line(ax: Any, rec: Recommendation) -> None:
    ax.axhline(rec.target, color="crimson", lw=1, ls=":", label=f"target {rec.target:g}")


def _at(sims: np.ndarray, percentile: float) -> np.ndarray:
    at: np.ndarray = np.percentile(sims, percentile, axis=2)
    return at


def rate_fidelity(sweep: Sweep, rec: Recommendation) -> bytes:
    """Per gauge of the recommendation's model: similarity (at the percentile, and median) vs total bytes."""
    m = next(x for x in sweep.models if x.name == rec.model)
    gauges = m.gauges()
    fig = Figure(figsize=(5.2 * min(len(gauges), 2), 3.6 * ((len(gauges) + 1) // 2)))
    mb = sweep.bytes.sum(axis=2) / 1e6  # [size, quality]
    for gi, g in enumerate(gauges):
        ax = fig.add_subplot((len(gauges) + 1) // 2, min(len(gauges), 2), gi + 1)
        sims = m.values(g)
        at, med = _at(sims, rec.percentile), np.median(sims, axis=2)
        for si, size in enumerate(sweep.sizes):
            colour = _colour(si, len(sweep.sizes))
            ax.plot(mb[si], at[si], "o-", ms=3, color=colour, label=f"{size} px")
            ax.plot(mb[si], med[si], "--", lw=0.8, color=colour)
        _target_line(ax, rec)
        if rec.single is not None and g == rec.gauge:
            ax.plot(rec.single.total_bytes / 1e6, rec.single.at_percentile, "*", ms=14, color="crimson",
                    label=f"recommended q{rec.single.quality}")
        _label(ax, "total stored MB (log)", f"similarity, p{rec.percentile:g} (solid) / median (dashed)",
               f"{m.name}: {g}", log_x=True)
    fig.tight_layout()
    return _png(fig)


def _colour(i: int, n: int) -> tuple[float, float, float, float]:
    """Sizes in order along viridis (largest first, dark)."""
    rgba = colormaps["viridis"](i / max(n - 1, 1))
    return (float(rgba[0]), float(rgba[1]), float(rgba[2]), float(rgba[3]))


def pareto_front(sweep: Sweep, rec: Recommendation) -> bytes:
    m = next(x for x in sweep.models if x.name == rec.model)
    sims = m.values(rec.gauge)
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for si, size in enumerate(sweep.sizes):
        pts = [setting(sweep, sims, si, qi, rec.percentile) for qi in range(len(sweep.qualities))]
        ax.scatter([p.total_bytes / 1e6 for p in pts], [p.at_percentile for p in pts], s=14,
                   color=_colour(si, len(sweep.sizes)), label=f"{size} px")
    front = pareto([*rec.pareto])
    ax.plot([p.total_bytes / 1e6 for p in front], [p.at_percentile for p in front], "k-", lw=1, label="Pareto front")
    _target_line(ax, rec)
    if rec.single is not None and rec.adaptive is not None:
        ax.plot(rec.single.total_bytes / 1e6, rec.single.at_percentile, "*", ms=14, color="crimson",
                label=f"single q{rec.single.quality} @ {rec.single.size}")
        ax.plot(rec.adaptive.total_bytes / 1e6, rec.adaptive.at_percentile, "D", ms=8, color="darkorange",
                label="adaptive (expected)")
    _label(ax, "total stored MB (log)", f"similarity at p{rec.percentile:g} ({rec.gauge})",
           f"size x quality: bytes vs similarity ({rec.model})", log_x=True)
    return _png(fig)


def per_image(sweep: Sweep, rec: Recommendation) -> bytes:
    """At the chosen size: every image at every quality (bits per pixel vs similarity)."""
    m = next(x for x in sweep.models if x.name == rec.model)
    sims = m.values(rec.gauge)
    size = rec.size if rec.size is not None else sweep.sizes[-1]
    si = sweep.sizes.index(size)
    bpp = 8 * sweep.bytes[si] / np.maximum(sweep.pixels()[si], 1)[None, :]  # [quality, image]
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    q = np.repeat(np.asarray(sweep.qualities)[:, None], bpp.shape[1], axis=1)
    sc = ax.scatter(bpp.ravel(), sims[si].ravel(), c=q.ravel(), cmap="viridis", s=12)
    fig.colorbar(sc, ax=ax, label="JPEG quality")
    if rec.adaptive is not None:
        idx = [sweep.qualities.index(x) for x in rec.adaptive.qualities]
        cols = np.arange(len(idx))
        ax.scatter(bpp[idx, cols], sims[si][idx, cols], s=60, facecolors="none", edgecolors="crimson",
                   label="adaptive choice")
    _target_line(ax, rec)
    _label(ax, "bits per pixel (log)", f"similarity ({rec.gauge})", f"each image at {size} px ({rec.model})",
           log_x=True)
    return _png(fig)


def neighbours(sweep: Sweep, rec: Recommendation) -> bytes:
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    for mi, m in enumerate(sweep.models):
        style = "-" if mi == 0 else "--"
        for si, size in enumerate(sweep.sizes):
            colour = _colour(si, len(sweep.sizes))
            ax.plot(sweep.qualities, m.topk[si], style, marker="o", ms=3, color=colour,
                    label=f"{m.name} {size} px: top-{m.k}")
            ax.plot(sweep.qualities, m.top1[si], style, marker="x", ms=4, lw=0.6, color=colour)
    agreement = np.concatenate([np.ravel(m.top1) for m in sweep.models])
    measured = agreement[np.isfinite(agreement)]  # NaN with fewer than 2 images
    ax.set_ylim(max(0.0, float(measured.min()) - 0.05 if measured.size else 0.0) - 0.01, 1.01)
    _label(ax, "JPEG quality", "neighbour agreement (o top-k, x top-1)",
           "do nearest neighbours survive compression?", legend=6)
    return _png(fig)


def views_and_models(sweep: Sweep, rec: Recommendation) -> bytes:
    """At the chosen size: similarity at the percentile vs quality, for every model and gauge."""
    size = rec.size if rec.size is not None else sweep.sizes[-1]
    si = sweep.sizes.index(size)
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    styles = {"whole": "-", "tiles-min": ":", "tiles-p10": "--", "tiles-mean": "-."}
    for mi, m in enumerate(sweep.models):
        for g in m.gauges():
            at = _at(m.values(g), rec.percentile)[si]
            ax.plot(sweep.qualities, at, styles[g], marker="o", ms=3, color=f"C{mi}", label=f"{m.name} {g}")
    _target_line(ax, rec)
    _label(ax, "JPEG quality", f"similarity at p{rec.percentile:g}",
           f"what each model and view calls safe at {size} px")
    return _png(fig)


@dataclass
class Crop:
    title: str
    source: np.ndarray  # HWC uint8
    stored: np.ndarray


def crops(items: Sequence[Crop]) -> bytes:
    """Source vs stored (and their difference, amplified) for the worst-affected images."""
    fig = Figure(figsize=(9, 3.1 * max(len(items), 1)))
    for r, c in enumerate(items):
        diff = np.abs(c.source.astype(np.int16) - c.stored.astype(np.int16)).max(axis=2)
        panels = [(c.source, "source (resized, uncompressed)", None), (c.stored, "stored", None),
                  (np.minimum(diff * 8, 255).astype(np.uint8), "|difference| x 8", "magma")]
        for k, (img, label, cmap) in enumerate(panels):
            ax = fig.add_subplot(len(items), 3, 3 * r + k + 1)
            ax.imshow(img, cmap=cmap, interpolation="nearest", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label if k else f"{c.title}\n{label}", fontsize=8)
    fig.tight_layout()
    return _png(fig)

