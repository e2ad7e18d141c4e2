"""The per-image search: every image searches each variant the spec allows over the quality ladder,
all images of a batch in lockstep (one encode + one model call per round), and the smallest
candidate measured to pass is stored (:func:`decide`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from preprocess.core.timing import Laps
from preprocess.pipeline.batches import Embeddings
from preprocess.pipeline.codecs import Candidate, Variant
from preprocess.pipeline.engines.base import Loaded
from preprocess.pipeline.gate.measure import Measure, Measured, Rounds
from preprocess.pipeline.gate.priors import Outcome, Prior, Priors
from preprocess.pipeline.gate.search import SETTLE, Search
from preprocess.pipeline.spec import Spec
from preprocess.rows.schema import ItemStatus

Status = ItemStatus | Literal["rejected"]  # "rejected" is recorded as a failure, not an item


@dataclass
class Decision:
    """What the gate chose for one prepared image."""

    status: Status
    candidate: Candidate | None  # what is stored; None when the source bytes are kept (or rejected)
    data: bytes | None  # the stored bytes (after Engine.finish); None for "source" and "rejected"
    similarity: float
    embedding: Embeddings  # of what is stored [D]
    reference: Embeddings  # of the source, as the model sees it [D]
    probes: int
    tried: dict[str, float] = field(default_factory=dict)  # "encoder chroma qNN" -> measured similarity
    library: str = ""  # the library that made the stored bytes when not the engine's usual one (Encoded.library)

    @property
    def quality(self) -> int:
        """0 when no candidate is stored."""
        return self.candidate.quality if self.candidate is not None and self.data is not None else 0


@dataclass
class ImageSearch:
    """One image's searches, one per variant, run one variant after the other."""

    searches: list[Search]
    reference: Embeddings  # the source's embedding (where earlier images like it crossed: the first guess)
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
    rounds = Rounds(measure, loaded, spec, clock)
    variants = spec.encode.variants()
    ladder = spec.quality.ladder()
    states = _search(rounds, variants, ladder, priors or {})
    return _conclude(rounds, states, variants, ladder)


def _search(rounds: Rounds, variants: Sequence[Variant], ladder: Sequence[int], priors: Priors) -> list[ImageSearch]:
    threshold = rounds.spec.gate.threshold
    states = [ImageSearch([Search(lo=0, hi=len(ladder) - 1) for _ in variants], ref) for ref in rounds.reference]
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


def _conclude(rounds: Rounds, states: Sequence[ImageSearch], variants: Sequence[Variant],
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


def _decision(spec: Spec, st: ImageSearch, chosen: tuple[Measured, bytes] | None, reference: Embeddings) -> Decision:
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


def _outcome(st: ImageSearch, variants: Sequence[Variant]) -> Outcome:
    out = Outcome(reference=st.reference.copy())  # not a view that keeps its whole batch alive
    for v, s in zip(variants, st.searches, strict=True):
        if s.best is not None:
            out.chosen[v] = s.best
        slope = s.slope()
        if slope is not None:
            out.slopes[v] = slope
    return out
