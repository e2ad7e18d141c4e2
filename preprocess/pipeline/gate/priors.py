"""What earlier images teach later searches: where each variant's search starts (:class:`Prior`) and
how it extrapolates, from the images searched before (:class:`GateStats`) and from the rows a branch
already holds (:meth:`GateStats.seed_from`). Only priors: every decision is still measured.
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


@dataclass(frozen=True, eq=False)
class Prior:
    """Where one variant's search starts and how it extrapolates (from earlier images)."""

    guess: int | None = None  # ladder index of the first probe; None: the middle
    slope: float = DEFICIT_SLOPE
    seen: Embeddings | None = None  # [N, D] reference embeddings of earlier images, and ...
    rungs: NDArray[np.int_] | None = None  # [N] ... the rung each chose

    def first(self, reference: Embeddings) -> int | None:
        """The first probe for an image whose source embeds as ``reference`` [D]: the median rung of its
        nearest earlier images when they look alike, else the median of all (:attr:`guess`)."""
        if self.seen is None or self.rungs is None or not len(self.seen):
            return self.guess
        sims = similarity(self.seen, reference)
        near = np.argsort(-sims, kind="stable")[:NEIGHBOURS]
        near = near[sims[near] >= NEIGHBOUR]
        return int(np.median(self.rungs[near])) if len(near) else self.guess


Priors = dict[Variant, Prior]  # per variant, for one batch (a snapshot of :class:`GateStats`)


@dataclass
class Outcome:
    """What one image's search teaches :class:`GateStats` (rung chosen and slope measured per variant)."""

    chosen: dict[Variant, int] = field(default_factory=dict)
    slopes: dict[Variant, float] = field(default_factory=dict)
    reference: Embeddings | None = None  # the source's embedding [D]


@dataclass
class GateStats:
    """What earlier images teach later searches, per variant: the chosen rungs (the next first guess
    is their median, or that of the nearest earlier images by their sources' embeddings) and the
    measured deficit slopes (the next extrapolation uses their median)."""

    spec: Spec
    chosen: dict[Variant, deque[int]] = field(default_factory=dict)
    slopes: dict[Variant, deque[float]] = field(default_factory=dict)
    seen: dict[Variant, deque[tuple[Embeddings, int]]] = field(default_factory=dict)  # (reference, rung)
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
            self._list(self.chosen, v).append(ladder.index(q))
            if embeddings is not None:
                self._list(self.seen, v).append((np.asarray(embeddings[k], np.float32), ladder.index(q)))

    def seed_from(self, recent: Recent) -> None:
        """:meth:`seed` from the branch's rows (:meth:`DatasetWriter.recent_choices`)."""
        self.seed(recent.qualities, recent.embeddings, recent.made_by)
