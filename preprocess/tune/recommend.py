"""From a sweep to a decision, per stored format: the setting to use, what it costs, and how the
alternatives compare.

A *gauge* is one way of judging a stored image: a model and a view (``whole``, or the tile view
combined by ``tiles-min`` / ``tiles-p10`` / ``tiles-mean``). The target is met at a setting when the
``percentile``-th percentile of the sample's similarities (by the chosen gauge) is >= ``target``.
Bytes are as stored (:attr:`Sweep.bytes`: after ``Engine.finish``).

Per format (each format's codings: its encoders x chroma subsamplings):

- (a) single: per size, the lowest swept quality meeting the target (of the coding with the fewest
  bytes there, when the format has several).
- (b) adaptive: the quality ladder the recommended spec writes (:func:`swept_ladder`: rungs that
  were all swept, ending at (a)'s quality); per image, in each coding, the lowest rung whose
  similarity is >= the target, and of those the candidate with the fewest bytes (else the primary
  coding at the top rung, as the gate's ``on_fail = "flag"`` stores it). No image then costs more
  than in (a) when the format has one coding, and no image ends below min(target, its similarity
  in (a)), so the percentile still meets the target. This is what ``run`` does with the recommended
  spec; its search may stop one rung above the lowest passing one when similarity is not monotone in
  quality, so the expected bytes are a floor for ``run``'s.
- (c) the Pareto front of (coding, size, quality): no other setting has fewer bytes and a higher
  similarity.

The model's input is small (224 px for the bundled models), so a whole-image similarity cannot say
which resolution a downstream user needs: the size is the spec's ``resize.size`` when it was swept
(or ``size`` when given), else the largest swept size that meets the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.pipeline.spec import Quality
from preprocess.tune.sweep import ModelSweep, Sweep

GAUGES = ("whole", "tiles-min", "tiles-p10", "tiles-mean")
MAX_STEP = 50  # quality.step's bound in a spec


@dataclass(frozen=True)
class Target:
    """What a recommendation must reach: ``similarity`` at the ``percentile``-th percentile of the sample,
    judged by ``model`` (default: the sweep's first, the spec's gate model) through ``gauge``; at
    ``size`` when given (else the spec's ``resize.size`` if swept, else the largest meeting it)."""

    similarity: float
    percentile: float = 1.0
    model: str | None = None
    gauge: str = "whole"
    size: int | None = None


@dataclass(frozen=True)
class Setting:
    """One (coding, size, quality) over the whole sample, judged by one gauge."""

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
    coding: str = ""  # Coding.label


@dataclass(frozen=True)
class Ladder:
    """The adaptive spec's quality ladder: ``quality.min``, ``max``, ``step`` and the rungs they give."""

    min: int
    max: int
    step: int
    rungs: list[int]
    note: str = ""  # why it is not every swept quality up to ``max`` ("" when it is)


@dataclass(frozen=True)
class Choice:
    """One sample image as the adaptive setting stores it."""

    index: int  # into Sweep.images
    path: str
    coding: int  # into Sweep.codings
    quality: int
    bytes: int  # as stored
    similarity: float  # by the recommendation's gauge
    passed: bool  # False: no rung reached the target; stored at the top rung and flagged
    tile: int | None  # the worst model tile at this choice (tile view measured), else None


@dataclass(frozen=True)
class Adaptive:
    size: int
    max_quality: int
    ladder: Ladder
    choices: list[Choice]  # per image, in sample order
    total_bytes: int
    at_percentile: float
    below_target: int  # images stored at max_quality without reaching the target (flagged by run)
    saving: float  # fraction of the single setting's bytes saved

    @property
    def qualities(self) -> list[int]:
        return [c.quality for c in self.choices]

    def worst_first(self) -> list[Choice]:
        """Every image, lowest similarity first."""
        return sorted(self.choices, key=lambda c: (c.similarity, c.index))


@dataclass
class Recommendation:
    format: str
    codings: list[int]  # into Sweep.codings: this format's, the primary first
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
    # every measured (model, gauge) -> size -> lowest quality meeting the target: models disagree
    by_gauge: dict[str, dict[int, int | None]] = field(default_factory=dict)
    message: str = ""  # why there is no recommendation (an unreachable target), or a changed size

    @property
    def ok(self) -> bool:
        return self.single is not None and self.adaptive is not None


def setting(sweep: Sweep, sims: np.ndarray, at: tuple[int, int, int], percentile: float) -> Setting:
    """The statistics of one (coding, size, quality), ``at`` their indices, given the gauge's
    similarities ``sims[coding, size, quality, image]``."""
    ci, si, qi = at
    s = sims[ci, si, qi]
    b = sweep.bytes[ci, si, qi]
    px = int(sweep.pixels()[si].sum())
    return Setting(size=sweep.sizes[si], quality=sweep.qualities[qi], total_bytes=int(b.sum()),
                   bits_per_pixel=float(8 * b.sum() / px) if px else 0.0,
                   at_percentile=float(np.percentile(s, percentile)), minimum=float(s.min()),
                   p1=float(np.percentile(s, 1)), p5=float(np.percentile(s, 5)), median=float(np.median(s)),
                   mean=float(s.mean()), coding=sweep.codings[ci].label)


def lowest_meeting(sims: np.ndarray, target: float, percentile: float) -> list[int | None]:
    """Per size, the index of the lowest quality whose percentile meets the target (None: none does);
    ``sims`` is one coding's [size, quality, image]."""
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


def swept_ladder(qualities: Sequence[int], top: int) -> Ladder:
    """The longest quality ladder a spec can write (``quality.min``, ``min + step``, ..., ``quality.max``
    = ``top``, step <= 50: :meth:`preprocess.pipeline.spec.Quality.ladder`) whose every rung was swept; ties go to
    the lowest ``min``, then the smallest step. ``top`` alone is always one."""
    swept = set(qualities)
    below = sorted(q for q in swept if q <= top)
    best: Ladder | None = None
    for lo in below:
        for step in range(1, MAX_STEP + 1):
            rungs = Quality(mode="adaptive", min=lo, max=top, step=step).ladder()
            if set(rungs) <= swept and (best is None or len(rungs) > len(best.rungs)):
                best = Ladder(lo, top, step, rungs)
            if lo == top:
                break
    assert best is not None  # top itself was swept
    if best.rungs == below:
        return best
    left = [q for q in below if q not in best.rungs]
    note = (f"the swept qualities up to q{top} ({', '.join(map(str, below))}) are not one ladder a spec can "
            f"write (quality.min, min + step, ..., quality.max, step <= {MAX_STEP}); the recommended ladder, "
            f"q{best.min}..q{top} step {best.step} ({', '.join(map(str, best.rungs))}), is the longest that was "
            f"swept ({', '.join(f'q{q}' for q in left)} left out): sweep an even ladder, e.g. "
            f"--qualities {below[0]}..{top}/5, to adapt over all of them")
    return Ladder(best.min, best.max, best.step, best.rungs, note)


def _best_single(sweep: Sweep, sims: np.ndarray, rec: Recommendation, si: int) -> Setting | None:
    """At size ``si``: per coding of ``rec``'s format the lowest quality meeting the target; of those,
    the fewest bytes."""
    found = []
    for ci in rec.codings:
        qi = lowest_meeting(sims[ci, si : si + 1], rec.target, rec.percentile)[0]
        if qi is not None:
            found.append(setting(sweep, sims, (ci, si, qi), rec.percentile))
    return min(found, key=lambda s: s.total_bytes, default=None)


def _adaptive(sweep: Sweep, m: ModelSweep, sims: np.ndarray, rec: Recommendation, single: Setting) -> Adaptive:
    si = sweep.sizes.index(single.size)
    ladder = swept_ladder(sweep.qualities, single.quality)
    rungs = [sweep.qualities.index(q) for q in ladder.rungs]
    tiles = m.worst_tile if m.worst_tile is not None else sweep.models[0].worst_tile
    choices = []
    for i, image in enumerate(sweep.images):
        found = [(int(sweep.bytes[ci, si, qi, i]), ci, qi) for ci in rec.codings
                 for qi in [next((q for q in rungs if sims[ci, si, q, i] >= rec.target), None)] if qi is not None]
        b, ci, qi = min(found) if found else (int(sweep.bytes[rec.codings[0], si, rungs[-1], i]), rec.codings[0],
                                              rungs[-1])
        choices.append(Choice(index=i, path=image.path, coding=ci, quality=sweep.qualities[qi], bytes=b,
                              similarity=float(sims[ci, si, qi, i]), passed=bool(found),
                              tile=int(tiles[ci, si, qi, i]) if tiles is not None else None))
    total = sum(c.bytes for c in choices)
    return Adaptive(size=single.size, max_quality=single.quality, ladder=ladder, choices=choices, total_bytes=total,
                    at_percentile=float(np.percentile([c.similarity for c in choices], rec.percentile)),
                    below_target=sum(not c.passed for c in choices),
                    saving=1.0 - total / single.total_bytes if single.total_bytes else 0.0)


def _model(sweep: Sweep, model: str | None, gauge: str) -> ModelSweep:
    m = next((x for x in sweep.models if model in (None, x.name)), None)
    if m is None:
        raise ConfigError(f"model {model!r} was not in the sweep", code=ErrorCode.TUNE_MODEL)
    if gauge not in m.gauges():
        raise ConfigError(f"the sweep has no {gauge!r} measurement for {m.name}", code=ErrorCode.TUNE_VIEW,
                          hint="the tile view needs the sweep's tiles (drop --no-tiles)")
    return m


def _check(sweep: Sweep, target: Target, fmt: str | None) -> tuple[str, ModelSweep]:
    """The format and the judging model, or a ConfigError for what cannot be recommended from."""
    if not sweep.images:
        raise ConfigError("no sample image could be read: nothing to recommend", code=ErrorCode.SAMPLE_EMPTY,
                          hint="see the skipped files in the report")
    if not 0.0 <= target.percentile <= 100.0:
        raise ConfigError(f"--percentile must be 0..100, got {target.percentile}", code=ErrorCode.TUNE_TARGET)
    fmt = fmt or sweep.formats[0]
    if fmt not in sweep.formats:
        raise ConfigError(f"format {fmt!r} was not swept ({', '.join(sweep.formats)})", code=ErrorCode.TUNE_FORMAT)
    if target.size is not None and target.size not in sweep.sizes:
        raise ConfigError(f"size {target.size} was not swept ({sweep.sizes})", code=ErrorCode.TUNE_GRID)
    return fmt, _model(sweep, target.model, target.gauge)


def recommend(sweep: Sweep, target: Target, fmt: str | None = None) -> Recommendation:
    """The recommendation for one stored format (default: the first swept, what ``recommended.toml`` stores)."""
    fmt, m = _check(sweep, target, fmt)
    sims = m.values(target.gauge)
    rec = Recommendation(format=fmt, codings=sweep.of_format(fmt), model=m.name, gauge=target.gauge,
                         target=target.similarity, percentile=target.percentile, source_bytes=sweep.source_bytes)
    for mm in sweep.models:
        for g in mm.gauges():
            singles = [_best_single(sweep, mm.values(g), rec, si) for si in range(len(sweep.sizes))]
            rec.by_gauge[f"{mm.name} {g}"] = {s: (b.quality if b else None)
                                               for s, b in zip(sweep.sizes, singles, strict=True)}
    rec.per_size = rec.by_gauge[f"{m.name} {rec.gauge}"]
    points = [setting(sweep, sims, (ci, si, qi), rec.percentile) for ci in rec.codings
              for si in range(len(sweep.sizes)) for qi in range(len(sweep.qualities))]
    rec.pareto = pareto(points)
    meeting = [s for s, q in rec.per_size.items() if q is not None]
    if not meeting:
        best = max(points, key=lambda p: p.at_percentile)
        rec.message = (f"{fmt}: no swept setting reaches similarity >= {rec.target} at p{rec.percentile:g} "
                       f"({m.name}, {rec.gauge}); the best is {best.at_percentile:.4f} at size {best.size}, "
                       f"quality {best.quality}")
        return rec
    wanted = target.size if target.size is not None else sweep.spec.resize.size
    rec.size = wanted if wanted in meeting else max(meeting)
    if wanted in sweep.sizes and wanted not in meeting:
        rec.message = (f"{fmt}: size {wanted} cannot meet the target at any swept quality; "
                       f"recommending size {rec.size} instead")
    rec.single = _best_single(sweep, sims, rec, sweep.sizes.index(rec.size))
    assert rec.single is not None
    rec.adaptive = _adaptive(sweep, m, sims, rec, rec.single)
    return rec


def recommend_formats(sweep: Sweep, target: Target) -> list[Recommendation]:
    """One recommendation per swept format, in the order swept."""
    return [recommend(sweep, target, f) for f in sweep.formats]
