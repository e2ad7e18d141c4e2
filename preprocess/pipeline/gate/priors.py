"""What earlier images teach later searches: where each track's search starts (:class:`Prior`) and
how it extrapolates, and at which size a size search starts (:func:`order`), from the images searched
before (:class:`GateStats`) and from the rows a branch already holds (:meth:`GateStats.seed_from`).
Only priors: every decision is still measured.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from preprocess.pipeline.batches import Embeddings, similarity
from preprocess.pipeline.codecs import Variant
from preprocess.pipeline.gate.search import DEFICIT_SLOPE
from preprocess.pipeline.gate.stages import Margins
from preprocess.pipeline.spec import Spec
from preprocess.rows.recent import Recent

# The first probe starts where the earlier images most like this one (cosine of the sources' embeddings
# at least NEIGHBOUR, the NEIGHBOURS nearest) crossed: a fleet's cameras keep sending the same scenes.
# The median rung is rounded down: between two rungs the lower is tried first, so an image that passes
# it is not stored higher. NEIGHBOUR is set for MobileNetV2's pooled features (non-negative: the 44 photos
# of the bytes bench are 0.29-0.89 apart, median 0.47, no pair >= 0.9); with another model it is only a
# prior: a looser or tighter match changes where searches start, never what is stored without a measure.
NEIGHBOUR = 0.9
NEIGHBOURS = 5


@dataclass(frozen=True)
class Track:
    """One line of an image's search: a variant at one stored size (``side``: the long or short side
    asked for, of ``resize.sizes``; 0 in a spec with one size)."""

    variant: Variant
    side: int = 0

    @property
    def label(self) -> str:
        """E.g. ``jpegli 4:2:0`` or ``jpegli 4:2:0 640px``."""
        return self.variant.label + (f" {self.side}px" if self.side else "")


@dataclass(frozen=True, eq=False)
class Prior:
    """Where one variant's search starts and how it extrapolates (from earlier images)."""

    guess: int | None = None  # ladder index of the first probe; None: the middle
    slope: float = DEFICIT_SLOPE
    seen: Embeddings | None = None  # [N, D] reference embeddings of earlier images, and ...
    rungs: NDArray[np.int_] | None = None  # [N] ... the rung each chose, and ...
    margins: tuple[Margins, ...] = ()  # [N] ... its checks' last margins (a staged engine's; else empty)

    def _near(self, reference: Embeddings) -> NDArray[np.intp]:
        """Indices of the nearest earlier images that look alike (at most NEIGHBOURS, nearest first)."""
        if self.seen is None or not len(self.seen):
            return np.zeros(0, dtype=np.intp)
        sims = similarity(self.seen, reference)
        near = np.argsort(-sims, kind="stable")[:NEIGHBOURS]
        return near[sims[near] >= NEIGHBOUR]

    def first(self, reference: Embeddings) -> int | None:
        """The first probe for an image whose source embeds as ``reference`` [D]: the median rung of its
        nearest earlier images when they look alike, else the median of all (:attr:`guess`)."""
        near = self._near(reference)
        return int(np.median(self.rungs[near])) if len(near) and self.rungs is not None else self.guess

    def checks(self, reference: Embeddings) -> Margins:
        """The margins of the checks of the nearest earlier image that looks alike and has them (where a
        staged engine looks first on a new image's first candidate: the same scene fails at the same crop)."""
        for k in map(int, self._near(reference)):
            if k < len(self.margins) and self.margins[k]:
                return self.margins[k]
        return {}


Priors = dict[Track, Prior]  # per track, for one batch (a snapshot of :class:`GateStats`)
# The key under which :class:`Priors` hold where a size search starts (its ``guess``: a side in px): a
# track no spec searches (no encoder is called "side", no side is negative).
SIDE = Track(Variant("jpeg", "side"), -1)


def order(tracks: Sequence[Track], priors: Priors) -> list[int]:
    """The order an image's tracks are searched in (indices of ``tracks``): variant after variant; a
    size search starts at the side the earlier images were stored at most (the median; else the middle
    side), goes down the smaller sides, then up the larger ones (each bounded by the bytes of the
    passes found before it)."""
    sides = sorted({t.side for t in tracks}, reverse=True)
    start = priors.get(SIDE, Prior()).guess
    first = min(sides, key=lambda s: abs(s - start)) if start is not None else sides[len(sides) // 2]
    ranked = [s for s in sides if s <= first] + sorted(s for s in sides if s > first)
    variants = list(dict.fromkeys(t.variant for t in tracks))
    return sorted(range(len(tracks)), key=lambda k: (variants.index(tracks[k].variant), ranked.index(tracks[k].side)))


@dataclass
class Outcome:
    """What one image's search teaches :class:`GateStats` (rung chosen and slope measured per track, the
    side stored by a size search)."""

    chosen: dict[Track, int] = field(default_factory=dict)
    slopes: dict[Track, float] = field(default_factory=dict)
    reference: Embeddings | None = None  # the source's embedding [D]
    side: int = 0  # the side of what was stored (a size search; 0 otherwise)
    margins: Margins = field(default_factory=dict)  # its checks' last margins (a staged engine's)


@dataclass
class GateStats:
    """What earlier images teach later searches, per track: the chosen rungs (the next first guess
    is their median, or that of the nearest earlier images by their sources' embeddings) and the
    measured deficit slopes (the next extrapolation uses their median); and the sides stored by a size
    search (the next one starts at their median)."""

    spec: Spec
    chosen: dict[Track, deque[int]] = field(default_factory=dict)
    slopes: dict[Track, deque[float]] = field(default_factory=dict)
    seen: dict[Track, deque[tuple[Embeddings, int]]] = field(default_factory=dict)  # (reference, rung)
    marks: dict[Track, deque[Margins]] = field(default_factory=dict)  # the margins of each of ``seen``
    window: int = 512  # the latest images each median is taken over (a daemon runs for months)

    def priors(self) -> Priors:
        out: Priors = {}
        for t in set(self.chosen) | set(self.slopes):
            chosen, slopes, seen = self.chosen.get(t), self.slopes.get(t), self.seen.get(t)
            out[t] = Prior(guess=int(np.median(chosen)) if chosen else None,
                           slope=float(np.median(slopes)) if slopes else DEFICIT_SLOPE,
                           seen=np.stack([e for e, _ in seen]) if seen else None,
                           rungs=np.array([r for _, r in seen]) if seen else None,
                           margins=tuple(self.marks.get(t, ())))
        return out

    def _list[T](self, lists: dict[Track, deque[T]], t: Track) -> deque[T]:
        return lists.setdefault(t, deque(maxlen=self.window))

    def guess(self) -> int | None:
        """The primary track's first guess (None before any image was searched)."""
        chosen = self.chosen.get(self.primary())
        return int(np.median(chosen)) if chosen else None  # as priors() has it, without building them

    def primary(self) -> Track:
        """The primary variant at the spec's size (its largest side in a size search)."""
        sides = self.spec.resize.sides()
        return Track(self.spec.encode.variants()[0], sides[0] if len(sides) > 1 else 0)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            for t, rung in o.chosen.items():
                self._list(self.chosen, t).append(rung)
                if o.reference is not None:
                    self._list(self.seen, t).append((o.reference, rung))
                    self._list(self.marks, t).append(o.margins)
            for t, slope in o.slopes.items():
                self._list(self.slopes, t).append(slope)
            if o.side:
                self._list(self.chosen, SIDE).append(o.side)

    def seed(self, qualities: Sequence[int], embeddings: Embeddings | None = None,
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
            t = Track(v, self.primary().side)
            self._list(self.chosen, t).append(ladder.index(q))
            if embeddings is not None:
                self._list(self.seen, t).append((np.asarray(embeddings[k], np.float32), ladder.index(q)))
                self._list(self.marks, t).append({})

    def seed_from(self, recent: Recent) -> None:
        """:meth:`seed` from the branch's rows (:meth:`DatasetWriter.recent_choices`)."""
        self.seed(recent.qualities, recent.embeddings, recent.made_by)
