"""From a measurement to a decision: across every format and size measured, the setting with the
fewest stored bytes that meets the target, the runner-up and what it costs.

A *target* is a similarity to reach at a percentile of the sample, judged by one gauge (a model and
a view, or the whole view and the crops together as the gate judges them: :mod:`.grid`): views judge,
they do not compete (a laxer view is not a cheaper setting). A
*setting* is one format at one size with an adaptive quality ladder, as ``run`` stores it: each image
at the lowest rung whose similarity meets the target, in whichever of the format's codings (encoder,
chroma) stores it in the fewest bytes; an image no rung passes is stored at the top rung, flagged.
The setting meets the target when the percentile of its images' similarities does. Bytes are as
stored (after ``Engine.finish``).

A choice is *exact* when it is where the gate's search would end: the ladder's first rung, a rung
whose next lower rung was measured and failed, or a pass within the gate's settle margin. The
search (:mod:`.search`) makes every choice exact for the targets of its band (the asked one and the
presets'); for another target (``tune --from REPORT --target T``) a choice may rest on a lower rung
not measured: its bytes are then an upper bound, and the recommendation says how many are.

With ``--every-quality`` (every image at every rung) there is also the single quality: the lowest
swept quality whose percentile meets the target with every image at it; the adaptive ladder then ends
there, as before. Presets name targets in the spirit of Cloudinary's ``q_auto:good/eco/low``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.pipeline.spec import Quality
from preprocess.tune.grid import Floats, ModelSweep, Sweep, score_name

MAX_STEP = 50  # quality.step's bound in a spec
# The gate's settle margin (preprocess.pipeline.gate.SETTLE, which imports the store's schema: `tune --from`
# stays light; tests/tune keeps the two equal): a pass this close above the threshold ends a search.
SETTLE = 0.001


@dataclass(frozen=True)
class Preset:
    """A named target: what the stored images are for."""

    name: str
    similarity: float
    percentile: float
    use: str


PRESETS = {p.name: p for p in (
    Preset("archive", 0.995, 1.0, "keep features for models not trained yet; re-labelling"),
    Preset("train", 0.99, 1.0, "train and evaluate this model (the default gate)"),
    Preset("index", 0.98, 5.0, "search, deduplication and retrieval by embedding"),
    Preset("preview", 0.95, 5.0, "people browsing and labelling; the model's view changes visibly"),
)}


@dataclass(frozen=True)
class Target:
    """What a recommendation must reach: ``similarity`` at the ``percentile``-th percentile of the sample,
    judged by ``model`` (default: the spec's gate models jointly, :attr:`Sweep.judge`) through ``gauge``; at
    ``size`` when given (else whichever size stores the fewest bytes)."""

    similarity: float
    percentile: float = 1.0
    model: str | None = None
    gauge: str = "whole"
    size: int | None = None


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
    """One sample image as a setting stores it."""

    index: int  # into Sweep.images
    path: str
    coding: int  # into Sweep.codings
    quality: int
    bytes: int  # as stored
    similarity: float  # by the target's gauge
    passed: bool  # False: no rung reached the target; stored at the top rung and flagged
    exact: bool  # where the gate's search would end (else: a lower rung was not measured)
    tile: int | None  # the worst model tile at this choice (tile view measured), else None


@dataclass(frozen=True)
class Point:
    """One (coding, size, quality) with every image at it (``--every-quality``)."""

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
class Setting:
    """One format at one size, adaptive over ``ladder``: each image at its choice."""

    format: str
    size: int
    ladder: Ladder
    choices: list[Choice]  # per image, in sample order
    total_bytes: int
    at_percentile: float
    meets: bool
    below_target: int  # images stored at the top without reaching the target (flagged by run)
    inexact: int  # choices that may rest on a lower rung not measured (bytes: an upper bound)
    single: Point | None = None  # the single quality meeting the target here (--every-quality)

    @property
    def qualities(self) -> list[int]:
        return [c.quality for c in self.choices]

    @property
    def max_quality(self) -> int:
        return self.ladder.max

    @property
    def saving(self) -> float:
        """The fraction of the single quality's bytes the ladder saves (0 without a single quality)."""
        return 1.0 - self.total_bytes / self.single.total_bytes if self.single and self.single.total_bytes else 0.0

    def worst_first(self) -> list[Choice]:
        """Every image, lowest similarity first."""
        return sorted(self.choices, key=lambda c: (c.similarity, c.index))

    @property
    def label(self) -> str:
        return f"{self.format} at {self.size} px"


@dataclass
class Recommendation:
    """One format's best setting (the fewest bytes among its sizes meeting the target)."""

    format: str
    codings: list[int]  # into Sweep.codings: this format's, the primary first
    model: str
    gauge: str
    target: float
    percentile: float
    source_bytes: int
    per_size: dict[int, Setting] = field(default_factory=dict)  # every size measured, meeting or not
    size: int | None = None
    # what every measured (model, gauge) reads at the choices: (at the percentile, median)
    gauges: dict[str, tuple[float, float]] = field(default_factory=dict)
    neighbours: tuple[float, float, int] | None = None  # (top-1, top-k agreement, k) at the choices
    message: str = ""  # why there is no recommendation (an unreachable target), or a changed size

    @property
    def setting(self) -> Setting | None:
        return self.per_size.get(self.size) if self.size is not None else None

    @property
    def adaptive(self) -> Setting | None:
        return self.setting

    @property
    def single(self) -> Point | None:
        return self.setting.single if self.setting is not None else None

    @property
    def ok(self) -> bool:
        return self.setting is not None


@dataclass
class Decision:
    """The setting with the fewest bytes that meets the target across every format and size, the
    runner-up (another format's best when one meets the target, else the next size) and each
    format's own recommendation."""

    target: Target
    recs: list[Recommendation]
    best: Setting | None
    runner_up: Setting | None
    presets: dict[str, Setting | None] = field(default_factory=dict)  # each preset's best setting

    @property
    def rec(self) -> Recommendation | None:
        """The best setting's format's recommendation."""
        return next((r for r in self.recs if self.best is not None and r.format == self.best.format), None)

    @property
    def extra_cost(self) -> float | None:
        """How many more bytes the runner-up stores (0.25: 25% more)."""
        if self.best is None or self.runner_up is None or not self.best.total_bytes:
            return None
        return self.runner_up.total_bytes / self.best.total_bytes - 1.0

    @property
    def message(self) -> str:
        return "" if self.best is not None else "; ".join(r.message for r in self.recs if r.message)


def point(sweep: Sweep, sims: Floats, at: tuple[int, int, int], percentile: float) -> Point:
    """The statistics of one (coding, size, quality) measured for every image, ``at`` their indices."""
    ci, si, qi = at
    s, b = sims[ci, si, qi], sweep.bytes[ci, si, qi]
    px = int(sweep.pixels()[si].sum())
    return Point(size=sweep.sizes[si], quality=sweep.qualities[qi], total_bytes=int(b.sum()),
                 bits_per_pixel=float(8 * b.sum() / px) if px else 0.0,
                 at_percentile=float(np.percentile(s, percentile)), minimum=float(s.min()),
                 p1=float(np.percentile(s, 1)), p5=float(np.percentile(s, 5)), median=float(np.median(s)),
                 mean=float(s.mean()), coding=sweep.codings[ci].label)


def lowest_meeting(sims: Floats, target: float, percentile: float) -> list[int | None]:
    """Per size, the index of the lowest quality measured for every image whose percentile meets the
    target (None: none does); ``sims`` is one coding's [size, quality, image]."""
    out: list[int | None] = []
    for row in sims:
        full = np.isfinite(row).all(axis=1)
        at = np.where(full, np.percentile(np.nan_to_num(row, nan=-1.0), percentile, axis=1), -np.inf)
        hits = np.flatnonzero(at >= target)
        out.append(int(hits[0]) if hits.size else None)
    return out


def pareto(points: Sequence[Point | Setting]) -> list[Point | Setting]:
    """Settings no other beats on both bytes (fewer) and similarity (higher), by increasing bytes."""
    front: list[Point | Setting] = []
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


@dataclass(frozen=True)
class _Judged:
    """One gauge's similarities and the worst tile at each point (when the tile view was measured)."""

    sims: Floats
    tiles: npt.NDArray[np.int32] | None

    def tile(self, at: tuple[int, int, int, int]) -> int | None:
        return int(self.tiles[at]) if self.tiles is not None else None


def _choice(sweep: Sweep, judged: _Judged, at: tuple[int, int, int], target: float,
            rungs: Sequence[int]) -> Choice | None:
    """Image ``i`` in coding ``ci`` at size ``si`` (``at``): the lowest rung (indices into the qualities) of
    ``rungs`` measured to pass, or None."""
    ci, si, i = at
    sims = judged.sims
    row = sims[ci, si, :, i]
    passing = [k for k, qi in enumerate(rungs) if row[qi] >= target]  # NaN (not measured) never passes
    if not passing:
        return None
    k = passing[0]
    qi = rungs[k]
    exact = k == 0 or bool(row[rungs[k - 1]] < target) or bool(row[qi] < target + SETTLE)
    return Choice(i, sweep.images[i].path, ci, sweep.qualities[qi], int(sweep.bytes[ci, si, qi, i]), float(row[qi]),
                  True, exact, judged.tile((ci, si, qi, i)))


def _flagged(sweep: Sweep, judged: _Judged, at: tuple[int, int, int], rungs: Sequence[int]) -> Choice:
    """No rung passed: the top rung of the primary coding, as ``on_fail = "flag"`` stores it (the highest
    measured one when the top was not measured: not exact)."""
    ci, si, i = at
    sims = judged.sims
    measured = [qi for qi in rungs if np.isfinite(sims[ci, si, qi, i])]
    qi = rungs[-1] if not measured or measured[-1] == rungs[-1] else measured[-1]
    return Choice(i, sweep.images[i].path, ci, sweep.qualities[qi], int(sweep.bytes[ci, si, qi, i]),
                  float(sims[ci, si, qi, i]), False, qi == rungs[-1] and bool(measured), judged.tile((ci, si, qi, i)))


def _single(sweep: Sweep, sims: Floats, codings: Sequence[int], si: int, target: Target) -> Point | None:
    """The single quality meeting the target at size ``si`` (every image measured there), of the coding
    with the fewest bytes."""
    found = []
    for ci in codings:
        qi = lowest_meeting(sims[ci, si : si + 1], target.similarity, target.percentile)[0]
        if qi is not None:
            found.append(point(sweep, sims, (ci, si, qi), target.percentile))
    return min(found, key=lambda p: p.total_bytes, default=None)


def setting(sweep: Sweep, m: ModelSweep, fmt: str, si: int, target: Target) -> Setting:
    """Format ``fmt`` at size ``si`` judged by ``m`` and the target's gauge."""
    sims, codings = m.values(target.gauge), sweep.of_format(fmt)
    judged = _Judged(sims, m.worst_tile if m.worst_tile is not None else sweep.models[0].worst_tile)
    # one quality for all: only where every image was measured at every rung (the search's first probes
    # can put every image on one rung, which says nothing about the rungs below it)
    single = _single(sweep, sims, codings, si, target) if sweep.mode == "every-quality" else None
    ladder = swept_ladder(sweep.qualities, single.quality if single else max(sweep.qualities))
    rungs = [sweep.qualities.index(q) for q in ladder.rungs]
    choices = []
    for i in range(len(sweep.images)):
        found = [c for ci in codings if (c := _choice(sweep, judged, (ci, si, i), target.similarity, rungs))]
        choices.append(min(found, key=lambda c: (c.bytes, c.coding)) if found else
                       _flagged(sweep, judged, (codings[0], si, i), rungs))
    at = float(np.percentile([c.similarity for c in choices], target.percentile))
    return Setting(fmt, sweep.sizes[si], ladder, choices, sum(c.bytes for c in choices), at,
                   at >= target.similarity, sum(not c.passed for c in choices), sum(not c.exact for c in choices),
                   single)


def _neighbours(sweep: Sweep, m: ModelSweep, choices: Sequence[Choice], si: int,
                k: int = 5) -> tuple[float, float, int] | None:
    """(top-1 agreement, mean top-k overlap, k) of each image's nearest neighbours among the sample:
    sources vs every image at its choice (None without the embeddings, e.g. from a saved report)."""
    if m.reference is None or len(choices) < 3:
        return None
    return _agreement(m, [(c.coding, si, sweep.qualities.index(c.quality), c.index) for c in choices], k)


def _agreement(m: ModelSweep, keys: Sequence[tuple[int, int, int, int]], k: int) -> tuple[float, float, int] | None:
    assert m.reference is not None
    k = max(1, min(k, len(keys) - 2))  # below n-1, else every other image is a neighbour

    def nearest(e: Floats) -> npt.NDArray[np.intp]:
        sims = e @ e.T
        np.fill_diagonal(sims, -np.inf)
        order: npt.NDArray[np.intp] = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return order

    stored = [m.stored.get(key) for key in keys]
    if any(e is None for e in stored):
        return None
    a, b = nearest(m.reference), nearest(np.stack([e for e in stored if e is not None]))
    overlap = [len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    return float(np.mean(a[:, 0] == b[:, 0])), float(np.mean(overlap)), k


def _check(sweep: Sweep, target: Target) -> ModelSweep:
    """The judging model, or a ConfigError for what cannot be recommended from."""
    if not sweep.images:
        raise ConfigError("no sample image could be read: nothing to recommend", code=ErrorCode.SAMPLE_EMPTY,
                          hint="see the skipped files in the report")
    if not 0.0 <= target.percentile <= 100.0 or not 0.0 < target.similarity <= 1.0:
        raise ConfigError(f"--target {target.similarity} --percentile {target.percentile}: the target is a "
                          "similarity in (0, 1], the percentile 0..100", code=ErrorCode.TUNE_TARGET)
    if target.size is not None and target.size not in sweep.sizes:
        raise ConfigError(f"size {target.size} was not measured ({sweep.sizes})", code=ErrorCode.TUNE_GRID,
                          hint=f"--sizes {target.size} measures it")
    m = sweep.model(target.model)
    if target.gauge not in m.gauges():
        raise ConfigError(f"the sweep has no {target.gauge!r} measurement for {m.name}", code=ErrorCode.TUNE_VIEW,
                          hint="the tile view is measured with --tiles")
    return m


def _reads(sweep: Sweep, sims: Floats, s: Setting, percentile: float) -> tuple[float, float]:
    """What a gauge reads at a setting's choices: (at the percentile, median)."""
    si = sweep.sizes.index(s.size)
    vals = np.array([sims[c.coding, si, sweep.qualities.index(c.quality), c.index] for c in s.choices])
    vals = vals[np.isfinite(vals)]
    return (float(np.percentile(vals, percentile)), float(np.median(vals))) if vals.size else (np.nan, np.nan)


def recommend(sweep: Sweep, target: Target, fmt: str | None = None) -> Recommendation:
    """One format's recommendation (default: the first measured): its sizes, and the one with the fewest
    bytes that meets the target (``target.size`` when given)."""
    m = _check(sweep, target)
    fmt = fmt or sweep.formats[0]
    if fmt not in sweep.formats:
        raise ConfigError(f"format {fmt!r} was not measured ({', '.join(sweep.formats)})", code=ErrorCode.TUNE_FORMAT)
    rec = Recommendation(fmt, sweep.of_format(fmt), m.name, target.gauge, target.similarity, target.percentile,
                         sweep.source_bytes)
    rec.per_size = {size: setting(sweep, m, fmt, si, target) for si, size in enumerate(sweep.sizes)}
    allowed = [s for size, s in rec.per_size.items() if target.size in (None, size)]
    meeting = [s for s in allowed if s.meets]
    if not meeting:
        best = max(allowed, key=lambda s: s.at_percentile)
        rec.message = (f"{fmt}: no measured setting reaches {score_name(target.gauge)} >= {target.similarity:g} at "
                       f"p{target.percentile:g} ({m.name}, {target.gauge}); the best is {best.at_percentile:.4f} "
                       f"at size {best.size}, quality up to {best.ladder.max}")
        return rec
    chosen = min(meeting, key=lambda s: (s.total_bytes, -s.size))
    rec.size = chosen.size
    rec.gauges = {f"{mm.name} {g}": _reads(sweep, mm.values(g), chosen, target.percentile)
                  for mm in sweep.models for g in mm.gauges()}
    rec.neighbours = _neighbours(sweep, m, chosen.choices, sweep.sizes.index(chosen.size))
    return rec


def _ranked(recs: Sequence[Recommendation], size: int | None) -> list[Setting]:
    """Every setting meeting the target (at ``size`` when given), fewest bytes first."""
    found = [s for r in recs for sz, s in r.per_size.items() if s.meets and size in (None, sz)]
    return sorted(found, key=lambda s: (s.total_bytes, -s.size, s.format))


def best_of(sweep: Sweep, target: Target) -> Setting | None:
    """The fewest-bytes setting meeting ``target`` across every format and size."""
    m = _check(sweep, target)
    found = [s for si, size in enumerate(sweep.sizes) if target.size in (None, size)
             for f in sweep.formats if (s := setting(sweep, m, f, si, target)).meets]
    return min(found, key=lambda s: (s.total_bytes, -s.size, s.format), default=None)


def decide(sweep: Sweep, target: Target) -> Decision:
    """The decision across every format and size measured, and what each preset would choose."""
    recs = [recommend(sweep, target, f) for f in sweep.formats]
    ranked = _ranked(recs, target.size)
    best = ranked[0] if ranked else None
    runner_up = next((s for s in ranked[1:] if best is not None and s.format != best.format),
                     ranked[1] if len(ranked) > 1 else None)
    presets = {name: best_of(sweep, Target(p.similarity, p.percentile, target.model, target.gauge, target.size))
               for name, p in PRESETS.items()}
    return Decision(target, recs, best, runner_up, presets)

