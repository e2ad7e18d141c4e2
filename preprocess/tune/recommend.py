"""From a sweep to a decision: the setting to use, what it costs, and how the alternatives compare.

A *gauge* is one way of judging a stored image: a model and a view (``whole``, or the tile view
combined by ``tiles-min`` / ``tiles-p10`` / ``tiles-mean``). The target is met at a setting when the
``percentile``-th percentile of the sample's similarities (by the chosen gauge) is >= ``target``.

- (a) single: per size, the lowest swept quality meeting the target.
- (b) adaptive: per image, the lowest swept quality <= (a)'s whose similarity is >= the target (else
  (a)'s quality itself, as the gate's ``on_fail = "flag"`` stores it). Every image is then stored at
  no more bytes than in (a), and no image ends below min(target, its similarity in (a)), so the
  percentile still meets the target. This is what ``run`` does with the recommended spec (adaptive,
  ``quality.max`` = (a)'s quality); its bisection may stop one rung above the lowest passing one when
  similarity is not monotone in quality, so the expected bytes are a floor for ``run``'s.
- (c) the Pareto front of (size, quality): no other setting has fewer bytes and a higher similarity.

The model's input is small (224 px for the bundled models), so a whole-image similarity cannot say
which resolution a downstream user needs: the size is the spec's ``resize.size`` when it was swept
(or ``size`` when given), else the largest swept size that meets the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from preprocess.errors import ConfigError
from preprocess.tune.sweep import Sweep

GAUGES = ("whole", "tiles-min", "tiles-p10", "tiles-mean")


@dataclass(frozen=True)
class Setting:
    """One (size, quality) over the whole sample, judged by one gauge."""

    size: int
    quality: int
    total_bytes: int
    bits_per_pixel: float
    at_percentile: float  # the similarity at the target's percentile
    minimum: float
    p1: float
    p5: float
    median: float
    mean: float


@dataclass(frozen=True)
class Adaptive:
    size: int
    max_quality: int
    qualities: list[int]  # per image
    total_bytes: int
    at_percentile: float
    below_target: int  # images stored at max_quality without reaching the target (flagged by run)
    saving: float  # fraction of the single setting's bytes saved


@dataclass(frozen=True)
class Worst:
    index: int
    path: str
    similarity: float
    bytes: int
    tile: int | None  # worst tile at this setting (tile view measured), for the crops


@dataclass
class Recommendation:
    model: str
    gauge: str
    target: float
    percentile: float
    source_bytes: int
    size: int | None = None
    single: Setting | None = None
    adaptive: Adaptive | None = None
    per_size: dict[int, int | None] = field(default_factory=dict)  # size -> lowest quality meeting the target
    pareto: list[Setting] = field(default_factory=list)
    worst: list[Worst] = field(default_factory=list)
    # every measured (model, gauge) -> size -> lowest quality meeting the target: models disagree
    by_gauge: dict[str, dict[int, int | None]] = field(default_factory=dict)
    message: str = ""  # why there is no recommendation (an unreachable target)

    @property
    def ok(self) -> bool:
        return self.single is not None


def setting(sweep: Sweep, sims: np.ndarray, si: int, qi: int, percentile: float) -> Setting:
    """The statistics of one (size, quality) given the gauge's similarities ``sims[size, quality, image]``."""
    s = sims[si, qi]
    b = sweep.bytes[si, qi]
    px = int(sweep.pixels()[si].sum())
    return Setting(size=sweep.sizes[si], quality=sweep.qualities[qi], total_bytes=int(b.sum()),
                   bits_per_pixel=float(8 * b.sum() / px) if px else 0.0,
                   at_percentile=float(np.percentile(s, percentile)), minimum=float(s.min()),
                   p1=float(np.percentile(s, 1)), p5=float(np.percentile(s, 5)), median=float(np.median(s)),
                   mean=float(s.mean()))


def lowest_meeting(sims: np.ndarray, target: float, percentile: float) -> list[int | None]:
    """Per size, the index of the lowest quality whose percentile meets the target (None: none does)."""
    at = np.percentile(sims, percentile, axis=2)  # [size, quality]
    out: list[int | None] = []
    for row in at:
        hits = np.flatnonzero(row >= target)
        out.append(int(hits[0]) if hits.size else None)
    return out


def pareto(points: list[Setting]) -> list[Setting]:
    """Settings no other beats on both bytes (fewer) and similarity (higher), by increasing bytes."""
    front: list[Setting] = []
    for p in sorted(points, key=lambda p: (p.total_bytes, -p.at_percentile)):
        if not front or p.at_percentile > front[-1].at_percentile:
            front.append(p)
    return front


def recommend(sweep: Sweep, *, target: float, percentile: float, model: str | None = None,
              gauge: str = "whole", size: int | None = None, worst: int = 4) -> Recommendation:
    if not sweep.images:
        raise ConfigError("no sample image could be read: nothing to recommend", code="SAMPLE_EMPTY",
                          hint="see the skipped files in the report")
    if not 0.0 <= percentile <= 100.0:
        raise ConfigError(f"--percentile must be 0..100, got {percentile}", code="TUNE_TARGET")
    m = next((x for x in sweep.models if model in (None, x.name)), None)
    if m is None:
        raise ConfigError(f"model {model!r} was not in the sweep", code="TUNE_MODEL")
    if gauge not in m.gauges():
        raise ConfigError(f"the sweep has no {gauge!r} measurement for {m.name}", code="TUNE_VIEW",
                          hint="the tile view needs the sweep's tiles (drop --no-tiles)")
    if size is not None and size not in sweep.sizes:
        raise ConfigError(f"size {size} was not swept ({sweep.sizes})", code="TUNE_GRID")
    sims = m.values(gauge)
    rec = Recommendation(model=m.name, gauge=gauge, target=target, percentile=percentile,
                         source_bytes=sweep.source_bytes)
    for mm in sweep.models:
        for g in mm.gauges():
            hits = lowest_meeting(mm.values(g), target, percentile)
            rec.by_gauge[f"{mm.name} {g}"] = {s: (sweep.qualities[h] if h is not None else None)
                                               for s, h in zip(sweep.sizes, hits, strict=True)}
    hits = lowest_meeting(sims, target, percentile)
    rec.per_size = rec.by_gauge[f"{m.name} {gauge}"]
    points = [setting(sweep, sims, si, qi, percentile)
              for si in range(len(sweep.sizes)) for qi in range(len(sweep.qualities))]
    rec.pareto = pareto(points)
    wanted = size if size is not None else sweep.spec.resize.size
    meeting = [s for s, h in zip(sweep.sizes, hits, strict=True) if h is not None]
    if not meeting:
        best = max(points, key=lambda p: p.at_percentile)
        rec.message = (f"no swept setting reaches similarity >= {target} at the {percentile:g}th percentile "
                       f"({m.name}, {gauge}); the best is {best.at_percentile:.4f} at size {best.size}, "
                       f"quality {best.quality}")
        return rec
    chosen = wanted if wanted in meeting else max(meeting)
    if wanted in sweep.sizes and wanted not in meeting:
        rec.message = (f"size {wanted} cannot meet the target at any swept quality; "
                       f"recommending size {chosen} instead")
    rec.size = chosen
    si = sweep.sizes.index(chosen)
    qi = hits[si]
    assert qi is not None
    rec.single = points[si * len(sweep.qualities) + qi]
    # (b): per image, the lowest quality up to the single one that passes; else the single one
    per_image = sims[si, : qi + 1]  # [quality, image]
    passing = per_image >= target
    first = np.where(passing.any(axis=0), passing.argmax(axis=0), qi)
    chosen_bytes = sweep.bytes[si, first, np.arange(len(first))]
    chosen_sims = per_image[first, np.arange(len(first))]
    total = int(chosen_bytes.sum())
    rec.adaptive = Adaptive(size=chosen, max_quality=sweep.qualities[qi],
                            qualities=[sweep.qualities[int(f)] for f in first], total_bytes=total,
                            at_percentile=float(np.percentile(chosen_sims, percentile)),
                            below_target=int((~passing.any(axis=0)).sum()),
                            saving=1.0 - total / rec.single.total_bytes if rec.single.total_bytes else 0.0)
    order = np.argsort(sims[si, qi], kind="stable")[:worst]
    tiles = m.worst_tile if m.worst_tile is not None else sweep.models[0].worst_tile
    rec.worst = [Worst(index=int(i), path=sweep.images[int(i)].path, similarity=float(sims[si, qi, i]),
                       bytes=int(sweep.bytes[si, qi, i]),
                       tile=int(tiles[si, qi, i]) if tiles is not None else None) for i in order]
    return rec
