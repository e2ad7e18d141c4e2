"""The feature gate: per image, the smallest candidate whose stored bytes still look like the source.

Reference = the source as the model sees it; candidate = encoded bytes decoded the same way;
score = cosine similarity of their embeddings. Adaptive mode searches, per image, every variant the
spec allows (:meth:`preprocess.pipeline.spec.Encode.variants`: an encoder and a chroma subsampling) over the
quality ladder. Every round, all images still searching encode at their own next candidate, the
candidates are viewed and embedded in ONE model call, and each image narrows its interval.
Similarity is not monotone in quality, so what is stored is always a candidate measured to pass,
with the similarity that was measured; among the variants, the one with the fewest final bytes
(:meth:`Engine.finish`: the bytes that are stored, same pixels) wins.

With ``gate.view = "tiles"`` the score is not the whole image's: the candidate is cut into
model-sized tiles at its own resolution (:meth:`Engine.tiles`), each tile is compared with the same
tile of the uncompressed resized image, and the tiles' similarities combine into one score
(``gate.tiles_combine``: the worst tile, the 10th percentile, or the mean). The embedding stored
with the row is still the whole image's.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from preprocess.core.timing import Laps
from preprocess.pipeline.codecs import Candidate, Encoded, Variant
from preprocess.pipeline.engines.base import Engine, Loaded, Prepared
from preprocess.pipeline.spec import Spec
from preprocess.rows.recent import Recent
from preprocess.rows.schema import ItemStatus

Status = ItemStatus | Literal["rejected"]  # "rejected" is recorded as a failure, not an item


class Embedder(Protocol):
    """What the gate needs of a feature extractor: a model-view batch -> L2-normalised [N, D]."""

    def embed(self, batch: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class Measure:
    """How a candidate is judged: encoded, decoded and viewed by ``engine``, embedded by ``embedder``."""

    engine: Engine
    embedder: Embedder


@dataclass
class Decision:
    """What the gate chose for one prepared image."""

    status: Status
    candidate: Candidate | None  # what is stored; None when the source bytes are kept (or rejected)
    data: bytes | None  # the stored bytes (after Engine.finish); None for "source" and "rejected"
    similarity: float
    embedding: np.ndarray  # of what is stored
    reference: np.ndarray  # of the source, as the model sees it
    probes: int
    tried: dict[str, float] = field(default_factory=dict)  # "encoder chroma qNN" -> measured similarity
    library: str = ""  # the library that made the stored bytes when not the engine's usual one (Encoded.library)

    @property
    def quality(self) -> int:
        """0 when no candidate is stored."""
        return self.candidate.quality if self.candidate is not None and self.data is not None else 0


# How fast the feature deficit (1 - similarity) falls with quality, in decades per quality point,
# before a job has measured its own: log10(1 - s) drops by ~0.1 per 5 libjpeg quality points on the
# bundled photos with MobileNetV2 (bench/NOTES.md). Each variant learns its own slope as images are
# searched (:class:`GateStats`). Only a prior for where to probe next: every decision is measured.
DEFICIT_SLOPE = 0.02
# A passing candidate this close above the threshold ends its variant's search without measuring
# the rung below it: near the crossing a quality step moves the similarity by about this much, so
# the rung below would almost surely fail (simulated on the measured curves of 44 photos: against 0.0005,
# 0.1% more bytes, 3% fewer probes for AVIF; 0.0015 costs 1% bytes; bench/NOTES.md).
SETTLE = 0.001


def _log_deficit(similarity: float) -> float:
    return math.log10(max(1.0 - similarity, 1e-6))


# The first probe starts where the earlier images most like this one (cosine of the sources' embeddings
# at least NEIGHBOUR, the NEIGHBOURS nearest) crossed: a fleet's cameras keep sending the same scenes.
# The median rung is rounded down: between two rungs the lower is tried first, so an image that passes
# it is not stored higher. NEIGHBOUR is set for MobileNetV2's pooled features (non-negative: the 44 photos
# of the bytes bench are 0.29-0.89 apart, median 0.47, no pair >= 0.9); with another model it is only a
# prior: a looser or tighter match changes where searches start, never what is stored without a measure.
NEIGHBOUR = 0.9
NEIGHBOURS = 5


@dataclass(frozen=True, eq=False)
class Prior:
    """Where one variant's search starts and how it extrapolates (from earlier images)."""

    guess: int | None = None  # ladder index of the first probe; None: the middle
    slope: float = DEFICIT_SLOPE
    seen: np.ndarray | None = None  # [N, D] reference embeddings of earlier images, and ...
    rungs: np.ndarray | None = None  # [N] ... the rung each chose

    def first(self, reference: np.ndarray) -> int | None:
        """The first probe for an image whose source embeds as ``reference``: the median rung of its
        nearest earlier images when they look alike, else the median of all (:attr:`guess`)."""
        if self.seen is None or self.rungs is None or not len(self.seen):
            return self.guess
        sims = self.seen @ reference
        near = np.argsort(-sims, kind="stable")[:NEIGHBOURS]
        near = near[sims[near] >= NEIGHBOUR]
        return int(np.median(self.rungs[near])) if len(near) else self.guess


@dataclass
class _Search:
    """One variant's search over ladder rungs ``0..top``: the open interval ``[lo, hi]`` between the
    highest rung measured to fail below it and the lowest rung measured to pass above it."""

    lo: int
    hi: int
    best: int | None = None
    tried: dict[int, float] = field(default_factory=dict)  # quality -> measured similarity

    def next_probe(self, guess: int | None, ladder: Sequence[int], threshold: float,
                   slope: float = DEFICIT_SLOPE, settle: float = 0.0) -> int | None:
        """The next rung to measure, or None when the search is over.

        First the guess (else the middle). Then the rung where the similarity is predicted to
        cross the threshold: interpolated in log(1 - similarity) between the two measured rungs
        around the interval, or extrapolated from the one measured side with ``slope``. A
        prediction outside the interval is clamped into it, so every probe still shrinks it: at
        worst this is a linear search, usually it is 1-2 probes. The search also ends when the
        lowest pass is within ``settle`` above the threshold.
        """
        lo, hi = self.lo, self.hi
        if lo > hi or (self.best is not None and self.tried[ladder[self.best]] < threshold + settle):
            return None
        if not self.tried:
            return guess if guess is not None and lo <= guess <= hi else (lo + hi) // 2
        target = self._predict(ladder, threshold, slope)
        if target is None:
            return (lo + hi) // 2
        rung = next((r for r in range(lo, hi + 1) if ladder[r] >= target - 1e-9), hi)
        return min(max(rung, lo), hi)

    def _predict(self, ladder: Sequence[int], threshold: float, slope: float) -> float | None:
        """The quality where the similarity is predicted to reach the threshold (None: no basis)."""
        goal = _log_deficit(threshold)
        lo, hi = self.lo, self.hi
        failed = ladder[lo - 1] if lo > 0 and ladder[lo - 1] in self.tried else None
        passed = ladder[hi + 1] if hi + 1 < len(ladder) and ladder[hi + 1] in self.tried else None
        if failed is not None and passed is not None:
            a, b = _log_deficit(self.tried[failed]), _log_deficit(self.tried[passed])
            if not a > goal >= b:  # only when 1 - threshold is below the log's floor
                return None
            return failed + (a - goal) / (a - b) * (passed - failed)
        if failed is not None:
            return failed + (_log_deficit(self.tried[failed]) - goal) / self._rising(failed, slope)
        if passed is not None:
            return passed - (goal - _log_deficit(self.tried[passed])) / slope
        return None

    def _rising(self, failed: int, slope: float) -> float:
        """The slope to extrapolate upwards from the highest failure: the prior, or flatter when the last
        two failures (4+ points apart) show the curve flattening (dark, smooth images: far from the
        guess, the deficit falls slowly, and the prior would creep up one short step at a time)."""
        below = sorted(q for q in self.tried if q < failed)
        if not below or failed - below[-1] < 4:
            return slope
        a = below[-1]
        secant = (_log_deficit(self.tried[a]) - _log_deficit(self.tried[failed])) / (failed - a)
        return min(slope, max(secant, slope / 4))

    def update(self, rung: int, similarity: float, threshold: float, ladder: Sequence[int]) -> bool:
        """Record a measurement; True when it passed."""
        self.tried[ladder[rung]] = similarity
        if similarity >= threshold:
            if self.best is None or rung < self.best:
                self.best = rung
            self.hi = rung - 1
            return True
        self.lo = rung + 1
        return False

    def slope(self) -> float | None:
        """This search's deficit slope: the least-squares fit of log(1 - similarity) against quality
        over every rung it measured (None with fewer than two rungs 4+ points apart, or no fall).
        The fit over the whole range, not the last step, is what extrapolating from a first guess
        needs: near the crossing the curve is steeper and noisier."""
        qs = sorted(self.tried)
        if len(qs) < 2 or qs[-1] - qs[0] < 4:
            return None
        x = np.asarray(qs, dtype=np.float64)
        y = np.asarray([_log_deficit(self.tried[q]) for q in qs])
        fall = -float(np.polyfit(x, y, 1)[0])
        return fall if fall > 0 else None


@dataclass
class Measured:
    """A candidate that was encoded and judged."""

    encoded: Encoded
    similarity: float
    embedding: np.ndarray | None  # whole-image embedding (None in the tiles view until it is stored)


@dataclass
class _Image:
    """One image's searches, one per variant, run one variant after the other."""

    searches: list[_Search]
    reference: np.ndarray  # the source's embedding (where earlier images like it crossed: the first guess)
    current: int = 0
    measured: dict[Candidate, Measured] = field(default_factory=dict)

    def next_probe(self, variants: Sequence[Variant], ladder: Sequence[int], priors: Priors,
                   threshold: float) -> Candidate | None:
        while self.current < len(self.searches):
            v = variants[self.current]
            prior = priors.get(v, Prior())
            search = self.searches[self.current]
            guess = prior.first(self.reference) if not search.tried else None
            rung = search.next_probe(guess, ladder, threshold, prior.slope, SETTLE)
            if rung is not None:
                return Candidate(v, ladder[rung])
            self.current += 1
        return None

    def best(self, variants: Sequence[Variant], ladder: Sequence[int]) -> list[Measured]:
        """Each variant's lowest passing candidate."""
        return [self.measured[Candidate(v, ladder[s.best])] for v, s in zip(variants, self.searches, strict=True)
                if s.best is not None]

    def top(self, variants: Sequence[Variant], ladder: Sequence[int]) -> Measured:
        """The primary variant's top rung, as measured: what ``on_fail`` goes by when nothing passed."""
        return self.measured[Candidate(variants[0], ladder[-1])]


Priors = dict[Variant, Prior]  # per variant, for one batch (a snapshot of :class:`GateStats`)


@dataclass
class GateStats:
    """What earlier images teach later searches, per variant: the chosen rungs (the next first guess
    is their median, or that of the nearest earlier images by their sources' embeddings) and the
    measured deficit slopes (the next extrapolation uses their median)."""

    spec: Spec
    chosen: dict[Variant, deque[int]] = field(default_factory=dict)
    slopes: dict[Variant, deque[float]] = field(default_factory=dict)
    seen: dict[Variant, deque[tuple[np.ndarray, int]]] = field(default_factory=dict)  # (reference, rung)
    window: int = 512  # the latest images each median is taken over (a daemon runs for months)

    def priors(self) -> Priors:
        out: Priors = {}
        for v in set(self.chosen) | set(self.slopes):
            chosen, slopes, seen = self.chosen.get(v), self.slopes.get(v), self.seen.get(v)
            out[v] = Prior(guess=int(np.median(chosen)) if chosen else None,
                           slope=float(np.median(slopes)) if slopes else DEFICIT_SLOPE,
                           seen=np.stack([e for e, _ in seen]) if seen else None,
                           rungs=np.array([r for _, r in seen]) if seen else None)
        return out

    def _list[T](self, lists: dict[Variant, deque[T]], v: Variant) -> deque[T]:
        return lists.setdefault(v, deque(maxlen=self.window))

    def guess(self) -> int | None:
        """The primary variant's first guess (None before any image was searched)."""
        chosen = self.chosen.get(self.spec.encode.variants()[0])
        return int(np.median(chosen)) if chosen else None  # as priors() has it, without building them

    def record(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            for v, rung in o.chosen.items():
                self._list(self.chosen, v).append(rung)
                if o.reference is not None:
                    self._list(self.seen, v).append((o.reference, rung))
            for v, slope in o.slopes.items():
                self._list(self.slopes, v).append(slope)

    def seed(self, qualities: Sequence[int], embeddings: np.ndarray | None = None,
             made_by: Sequence[tuple[str, str]] | None = None) -> None:
        """Start from qualities chosen earlier with the same spec (e.g. by the branch's last job), each
        credited to the variant that made it (``made_by``: the rows' encoder and chroma; without it, the
        spec's first variant), and with ``embeddings`` (the stored images', one per quality) from where
        images like each new one crossed: in the whole-image view a stored image embeds within the
        threshold of its source, so it stands for the source at the NEIGHBOUR scale."""
        ladder = self.spec.quality.ladder()
        variants = self.spec.encode.variants()
        for k, q in enumerate(qualities):
            v = variants[0] if made_by is None else next((v for v in variants if v.made(*made_by[k])), None)
            if v is None or q not in ladder:
                continue
            self._list(self.chosen, v).append(ladder.index(q))
            if embeddings is not None:
                self._list(self.seen, v).append((np.asarray(embeddings[k], np.float32), ladder.index(q)))

    def seed_from(self, recent: Recent) -> None:
        """:meth:`seed` from the branch's rows (:meth:`DatasetWriter.recent_choices`)."""
        self.seed(recent.qualities, recent.embeddings, recent.made_by)


@dataclass
class Outcome:
    """What one image's search teaches :class:`GateStats` (rung chosen and slope measured per variant)."""

    chosen: dict[Variant, int] = field(default_factory=dict)
    slopes: dict[Variant, float] = field(default_factory=dict)
    reference: np.ndarray | None = None  # the source's embedding


def combine_tiles(sims: np.ndarray, how: str) -> float:
    """One score from an image's per-tile similarities: ``min`` (the worst tile), ``p10`` (the 10th
    percentile, linear interpolation) or ``mean``."""
    if how == "min":
        return float(np.min(sims))
    if how == "p10":
        return float(np.percentile(sims, 10))
    if how == "mean":
        return float(np.mean(sims))
    raise ValueError(f"unknown tiles_combine {how!r}")


def tile_embeddings(engine: Engine, embedder: Embedder, images: Sequence[Prepared | Encoded]) -> list[np.ndarray]:
    """Per image, the embeddings of its tiles ``[tiles, D]`` (uncompressed for a Prepared, decoded for
    an encoded candidate)."""
    if not images:
        return []
    tiles = engine.tiles(images)
    return np.split(embedder.embed(tiles.batch), np.cumsum(tiles.counts)[:-1])


def tile_similarities(engine: Engine, embedder: Embedder, encoded: Sequence[Encoded],
                      reference: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per candidate, each tile's cosine similarity with the same tile of its reference (from
    :func:`tile_embeddings` of the uncompressed image)."""
    return [np.einsum("nd,nd->n", e, r).astype(np.float32)
            for e, r in zip(tile_embeddings(engine, embedder, encoded), reference, strict=True)]


class _Round:
    """Measuring candidates for a batch: encode, view, embed, score (whole or tiles view)."""

    def __init__(self, measure: Measure, loaded: Loaded, spec: Spec, clock: Laps) -> None:
        engine, embedder = measure.engine, measure.embedder
        self.engine, self.embedder, self.spec, self.clock = engine, embedder, spec, clock
        self.images = loaded.prepared
        self.reference = embedder.embed(loaded.source_view)
        clock("infer")
        tiles = spec.gate.view == "tiles"
        self.tiles_ref = tile_embeddings(engine, embedder, self.images) if tiles else None
        clock("tiles")

    def measure(self, idxs: Sequence[int], asks: Sequence[Candidate]) -> list[Measured]:
        encoded = self.engine.encode([self.images[i] for i in idxs], asks)
        self.clock("encode")
        if self.tiles_ref is None:
            batch = self.engine.view(encoded)
            self.clock("view")
            emb = self.embedder.embed(batch)
            self.clock("infer")
            sims = np.einsum("nd,nd->n", emb, self.reference[list(idxs)])
            return [Measured(e, float(s), row) for e, s, row in zip(encoded, sims, emb, strict=True)]
        per_tile = tile_similarities(self.engine, self.embedder, encoded, [self.tiles_ref[i] for i in idxs])
        self.clock("tiles")
        return [Measured(e, combine_tiles(ts, self.spec.gate.tiles_combine), None)
                for e, ts in zip(encoded, per_tile, strict=True)]

    def embed_stored(self, measured: Sequence[Measured]) -> None:
        """Tiles view: the whole-image embedding of what is stored, in one batch."""
        todo = [m for m in measured if m.embedding is None]
        if todo:
            batch = self.engine.view([m.encoded for m in todo])
            self.clock("view")
            for m, e in zip(todo, self.embedder.embed(batch), strict=True):
                m.embedding = e
            self.clock("infer")


def decide(measure: Measure, loaded: Loaded, spec: Spec, priors: Priors | None = None,
           timings: dict[str, float] | None = None) -> tuple[list[Decision], list[Outcome]]:
    """Run the search for every prepared image of ``loaded``; decisions in the same order, and what
    each search teaches the next batches (:meth:`GateStats.record`).

    ``priors`` (e.g. :meth:`GateStats.priors`) give every image's first probe and extrapolation slope.
    Each image's search depends only on its own pixels and the priors, never on the other images of
    the call, so how a batch is cut into calls cannot change what is stored.

    ``timings`` (if given) accumulates seconds per stage: ``encode``, ``view`` (candidate decode +
    model view), ``infer`` (embedding, reference included), ``tiles`` and ``finish``.
    """
    if not loaded.prepared:
        return [], []
    clock = Laps(timings)
    rounds = _Round(measure, loaded, spec, clock)
    variants = spec.encode.variants()
    ladder = spec.quality.ladder()
    states = _search(rounds, variants, ladder, priors or {})
    return _conclude(rounds, states, variants, ladder)


def _search(rounds: _Round, variants: Sequence[Variant], ladder: Sequence[int], priors: Priors) -> list[_Image]:
    threshold = rounds.spec.gate.threshold
    states = [_Image([_Search(lo=0, hi=len(ladder) - 1) for _ in variants], ref) for ref in rounds.reference]
    while todo := [(i, c) for i, st in enumerate(states)
                   if (c := st.next_probe(variants, ladder, priors, threshold)) is not None]:
        idxs = [i for i, _ in todo]
        for (i, c), m in zip(todo, rounds.measure(idxs, [c for _, c in todo]), strict=True):
            st = states[i]
            st.measured[c] = m
            st.searches[variants.index(c.variant)].update(ladder.index(c.quality), m.similarity, threshold, ladder)
    # A search without a pass ends only once its top rung failed: on_fail always has it to go by.
    assert all(st.best(variants, ladder) or Candidate(variants[0], ladder[-1]) in st.measured for st in states)
    return states


def _conclude(rounds: _Round, states: Sequence[_Image], variants: Sequence[Variant],
              ladder: Sequence[int]) -> tuple[list[Decision], list[Outcome]]:
    """Pick each image's stored candidate (fewest final bytes among the variants' best), or apply on_fail."""
    spec, engine = rounds.spec, rounds.engine
    bests = [st.best(variants, ladder) or [st.top(variants, ladder)] for st in states]
    flat = [(i, m) for i, ms in enumerate(bests) for m in ms]
    if spec.gate.on_fail != "flag":  # a failing top candidate is not stored: no need to finish it
        flat = [(i, m) for i, m in flat if m.similarity >= spec.gate.threshold]
    finished = engine.finish([rounds.images[i] for i, _ in flat], [m.encoded for _, m in flat])
    rounds.clock("finish")
    final: dict[int, tuple[Measured, bytes]] = {}
    for (i, m), data in zip(flat, finished, strict=True):
        if i not in final or len(data) < len(final[i][1]):
            final[i] = (m, data)
    rounds.embed_stored([m for m, _ in final.values()])
    decisions = [_decision(spec, st, final.get(i), rounds.reference[i]) for i, st in enumerate(states)]
    outcomes = [_outcome(st, variants) for st in states]
    return decisions, outcomes


def _decision(spec: Spec, st: _Image, chosen: tuple[Measured, bytes] | None, reference: np.ndarray) -> Decision:
    tried = {c.label: m.similarity for c, m in st.measured.items()}
    probes = len(st.measured)
    if chosen is not None:
        m, data = chosen
        assert m.embedding is not None
        status: Status = "ok" if m.similarity >= spec.gate.threshold else "flagged"
        return Decision(status, m.encoded.candidate, data, m.similarity, m.embedding, reference, probes, tried,
                        library=m.encoded.library)
    if spec.gate.on_fail == "source":  # nothing passed
        return Decision("source", None, None, 1.0, reference, reference, probes, tried)
    top = st.top(spec.encode.variants(), spec.quality.ladder())  # on_fail = "reject"
    return Decision("rejected", top.encoded.candidate, None, top.similarity, reference, reference, probes, tried)


def _outcome(st: _Image, variants: Sequence[Variant]) -> Outcome:
    out = Outcome(reference=st.reference.copy())  # not a view that keeps its whole batch alive
    for v, s in zip(variants, st.searches, strict=True):
        if s.best is not None:
            out.chosen[v] = s.best
        slope = s.slope()
        if slope is not None:
            out.slopes[v] = slope
    return out


# The one search, public for tune (preprocess.tune.search): it finds each sample image's crossing of
# several thresholds with the gate's own probes, so that what tune expects is what the gate does.
Search = _Search
