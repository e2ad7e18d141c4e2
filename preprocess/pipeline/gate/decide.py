"""The per-image search: every image searches each track the spec allows (a variant at a stored size)
over the quality ladder, all images of a batch in lockstep (one encode + one model call per model per
round; check by check on a staged engine, :mod:`.stages`), and the candidate with the fewest bytes among
every one measured to pass is stored (:func:`decide`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from preprocess.core.timing import Laps
from preprocess.pipeline.batches import Embeddings
from preprocess.pipeline.codecs import Candidate, Encoded, Variant
from preprocess.pipeline.engines.base import Box, Loaded, Prepared, SourceImage
from preprocess.pipeline.gate.measure import Checks, Measure, Measured, Rounds
from preprocess.pipeline.gate.priors import Outcome, Prior, Priors, Track, order
from preprocess.pipeline.gate.search import DIP, LEAN, SETTLE, Search
from preprocess.pipeline.gate.stages import Margins
from preprocess.pipeline.spec import Spec
from preprocess.rows.schema import ItemStatus

Status = ItemStatus | Literal["rejected"]  # "rejected" is recorded as a failure, not an item


@dataclass
class Decision:
    """What the gate chose for one prepared image."""

    status: Status
    candidate: Candidate | None  # what is stored; None when the source bytes are kept (or rejected)
    data: bytes | None  # the stored bytes (after Engine.finish); None for "source" and "rejected"
    similarity: float  # the first check's similarity (the primary model's first view), as measured
    embedding: Embeddings  # of what is stored [D] (the primary model's whole view)
    reference: Embeddings  # of the source, as the primary model sees it [D]
    probes: int
    tried: dict[str, float] = field(default_factory=dict)  # "encoder chroma [side px] qNN" -> gate score
    library: str = ""  # the library that made the stored bytes when not the engine's usual one (Encoded.library)
    checks: Checks = field(default_factory=dict)  # every model's every view, of what is stored (or tried last)
    worst_crop: Box | None = None
    size: tuple[int, int] | None = None  # the stored (width, height), when it is not the batch image's

    @property
    def quality(self) -> int:
        """0 when no candidate is stored."""
        return self.candidate.quality if self.candidate is not None and self.data is not None else 0


@dataclass
class ImageSearch:
    """One image's searches, one per track, taken in ``order``; ``images[t]`` is what track ``t`` encodes
    (the batch image, or the same source at a smaller size)."""

    tracks: list[Track]
    images: list[Prepared]
    reference: Embeddings  # the source's embedding (where earlier images like it crossed: the first guess)
    order: list[int]
    searches: list[Search] = field(default_factory=list)
    current: int = 0
    measured: dict[tuple[int, int], Measured] = field(default_factory=dict)  # (track, rung) -> measured
    bound: dict[Variant, int] = field(default_factory=dict)  # a variant's fewest encoded bytes that passed

    def next_probe(self, ladder: Sequence[int], priors: Priors, threshold: float, *,
                   staged: bool = False) -> tuple[int, int] | None:
        """The next (track, rung) to measure, or None when every track is done (``staged``: a failure costs
        less to measure than a pass, and the search leans lower, :data:`~.search.LEAN`)."""
        while self.current < len(self.order):
            t = self.order[self.current]
            prior = priors.get(self.tracks[t], Prior())
            search = self.searches[t]
            guess = prior.first(self.reference) if not search.tried else None
            rung = search.next_probe(guess, ladder, threshold, slope=prior.slope, settle=SETTLE, dip=DIP,
                                     lean=LEAN if staged else 0)
            if rung is not None:
                return t, rung
            self._done(t, ladder)
            self.current += 1
        return None

    def _done(self, t: int, ladder: Sequence[int]) -> None:
        """A size search goes down the sides from where it started: a side that fails even at its top
        quality ends that, for its variant (a smaller image of the same source fails too)."""
        track = self.tracks[t]
        if not track.side or self.searches[t].best is not None or ladder[-1] not in self.searches[t].tried:
            return
        rest = self.order[self.current + 1:]
        smaller = {u for u in rest if self.tracks[u].variant == track.variant and self.tracks[u].side < track.side}
        self.order = self.order[:self.current + 1] + [u for u in rest if u not in smaller]

    def record(self, t: int, rung: int, m: Measured, threshold: float, ladder: Sequence[int]) -> None:
        self.measured[t, rung] = m
        if self.searches[t].update(rung, m.similarity, threshold, ladder):
            v = self.tracks[t].variant
            self.bound[v] = min(self.bound.get(v, len(m.encoded.data)), len(m.encoded.data))

    def prune(self, t: int, rung: int, encoded: Encoded) -> bool:
        """Whether a candidate cannot be stored: it has at least the bytes of a pass of its variant at
        another size. Then neither can any rung above it of its track, which the search leaves out."""
        bound = self.bound.get(self.tracks[t].variant)
        if bound is None or len(encoded.data) < bound:
            return False
        self.searches[t].prune(rung)
        return True

    def passes(self, threshold: float) -> list[tuple[int, Measured]]:
        """Per track, its pass with the fewest encoded bytes (every measured pass counts, not only the
        lowest rung: similarity is not monotone in quality)."""
        out: dict[int, Measured] = {}
        for (t, _), m in self.measured.items():
            if m.similarity >= threshold and (t not in out or len(m.encoded.data) < len(out[t].encoded.data)):
                out[t] = m
        return sorted(out.items())

    def top(self, ladder: Sequence[int]) -> tuple[int, Measured]:
        """The primary track's top rung, as measured: what ``on_fail`` goes by when nothing passed."""
        return 0, self.measured[0, len(ladder) - 1]

    def label(self, t: int, quality: int) -> str:
        return f"{self.tracks[t].label} q{quality}"


def decide(measure: Measure, loaded: Loaded, spec: Spec, priors: Priors | None = None, *,  # noqa: PLR0913 (options, by keyword)
           timings: dict[str, float] | None = None,
           sources: Sequence[SourceImage] | None = None) -> tuple[list[Decision], list[Outcome]]:
    """Run the search for every prepared image of ``loaded``; decisions in the same order, and what
    each search teaches the next batches (:meth:`GateStats.record`).

    ``priors`` (e.g. :meth:`GateStats.priors`) give every track's first probe and extrapolation slope,
    and where a size search starts. Each image's search depends only on its own pixels and the priors,
    never on the other images of the call, so how a batch is cut into calls cannot change what is
    stored. A spec with sizes in the search (``resize.sizes``) needs the batch's ``sources`` (the ones
    ``loaded`` was loaded from), which are loaded again at each smaller size.

    ``timings`` (if given) accumulates seconds per stage: ``encode``, ``view`` (candidate decode +
    model views), ``infer`` (embedding, references included), ``tiles`` (the references' regions),
    ``sizes`` (loading the smaller sizes) and ``finish``.
    """
    if not loaded.prepared:
        return [], []
    clock = Laps(timings)
    rounds = Rounds(measure, loaded, spec, clock)
    priors = priors or {}
    states = _states(rounds, spec, sources, priors)
    if rounds.staged:  # the first candidate's checks in the order the nearest earlier image's last ones failed
        for i, st in enumerate(states):
            if st.order:
                rounds.order.learn(i, priors.get(st.tracks[st.order[0]], Prior()).checks(st.reference))
    clock("sizes")
    _search(rounds, states, spec.quality.ladder(), priors)
    return _conclude(rounds, states, spec.quality.ladder())


def _states(rounds: Rounds, spec: Spec, sources: Sequence[SourceImage] | None, priors: Priors) -> list[ImageSearch]:
    """Each image's tracks (its variants at each distinct size), the images they encode, and their order."""
    variants = spec.encode.variants()
    sides = spec.resize.sides()
    sized = len(sides) > 1 and sources is not None
    extra: dict[tuple[int, int], Prepared] = {}  # (image, side) -> the source at that side
    if sized:
        assert sources is not None
        asks = [(i, side, replace(sources[p.index], target=t)) for i, p in enumerate(rounds.images)
                for side, t in _sides(spec, sources[p.index])[1:]]
        loaded = rounds.engine.load([s for _, _, s in asks])
        done = {p.index: p for p in loaded.prepared}
        extra = {(i, side): done[k] for k, (i, side, _) in enumerate(asks) if k in done}
    states = []
    for i, (image, ref) in enumerate(zip(rounds.images, rounds.reference, strict=True)):
        own = _sides(spec, sources[image.index]) if sized and sources is not None else [(0, (0, 0))]
        pairs = [(side, image if k == 0 else extra.get((i, side))) for k, (side, _) in enumerate(own)]
        tracks = [Track(v, side) for side, p in pairs if p is not None for v in variants]
        images = [p for _, p in pairs if p is not None for _ in variants]
        st = ImageSearch(tracks, images, ref, order(tracks, priors))
        st.searches = [Search(lo=0, hi=len(spec.quality.ladder()) - 1) for _ in tracks]
        states.append(st)
    return states


def _sides(spec: Spec, source: SourceImage) -> list[tuple[int, tuple[int, int]]]:
    """The sides a source is searched at with their stored sizes, largest first (equal sizes once)."""
    out: list[tuple[int, tuple[int, int]]] = []
    for side in spec.resize.sides():
        target = spec.resize.target(source.info.width, source.info.height, side)
        if all(target != t for _, t in out):
            out.append((side, target))
    return out


def _search(rounds: Rounds, states: list[ImageSearch], ladder: Sequence[int], priors: Priors) -> None:
    threshold = rounds.spec.gate.threshold
    staged = rounds.staged
    while todo := [(i, tr) for i, st in enumerate(states)
                   if (tr := st.next_probe(ladder, priors, threshold, staged=staged))]:
        encoded = rounds.encode([states[i].images[t] for i, (t, _) in todo],
                                [Candidate(states[i].tracks[t].variant, ladder[r]) for i, (t, r) in todo])
        keep = [k for k, (i, (t, r)) in enumerate(todo) if not states[i].prune(t, r, encoded[k])]
        if not keep:
            continue
        got = rounds.score([encoded[k] for k in keep], [todo[k][0] for k in keep],
                           [states[todo[k][0]].images[todo[k][1][0]] for k in keep])
        for k, m in zip(keep, got, strict=True):
            i, (t, r) = todo[k]
            states[i].record(t, r, m, threshold, ladder)
    # A search without a pass ends only once its top rung failed: on_fail always has it to go by.
    assert all(st.passes(threshold) or (0, len(ladder) - 1) in st.measured for st in states)


def _conclude(rounds: Rounds, states: Sequence[ImageSearch],
              ladder: Sequence[int]) -> tuple[list[Decision], list[Outcome]]:
    """Pick each image's stored candidate (fewest final bytes among its tracks' passes), or apply on_fail."""
    spec, engine = rounds.spec, rounds.engine
    threshold = spec.gate.threshold
    _complete_tops(rounds, states, ladder)
    flat = [(i, t, m) for i, st in enumerate(states) for t, m in (st.passes(threshold) or [st.top(ladder)])]
    if spec.gate.on_fail != "flag":  # a failing top candidate is not stored: no need to finish it
        flat = [(i, t, m) for i, t, m in flat if m.similarity >= threshold]
    finished = engine.finish([states[i].images[t] for i, t, _ in flat], [m.encoded for _, _, m in flat])
    rounds.clock("finish")
    final: dict[int, tuple[int, Measured, bytes]] = {}
    for (i, t, m), data in zip(flat, finished, strict=True):
        if i not in final or len(data) < len(final[i][2]):
            final[i] = (t, m, data)
    rounds.embed_stored([m for _, m, _ in final.values()])
    decisions = [_decision(rounds, st, final.get(i), rounds.reference[i]) for i, st in enumerate(states)]
    return decisions, [_outcome(st, final.get(i), rounds.order.margins.get(i, {})) for i, st in enumerate(states)]


def _complete_tops(rounds: Rounds, states: Sequence[ImageSearch], ladder: Sequence[int]) -> None:
    """Where nothing passed, the top rung is what ``on_fail`` goes by (stored flagged, or recorded as
    rejected): measured under every check, not only up to its first failing one."""
    top = (0, len(ladder) - 1)
    todo = [(i, st) for i, st in enumerate(states)
            if not st.passes(rounds.spec.gate.threshold) and not st.measured[top].complete]
    done = rounds.complete([st.measured[top] for _, st in todo], [i for i, _ in todo],
                           [st.images[0] for _, st in todo])
    for (_, st), m in zip(todo, done, strict=True):
        st.measured[top] = m


def _first(spec: Spec, m: Measured) -> float:
    """The first check's similarity (the primary model's first view) of a measured candidate."""
    return m.checks.get(spec.gate.model, {}).get(spec.gate.view, m.similarity)


def _decision(rounds: Rounds, st: ImageSearch, chosen: tuple[int, Measured, bytes] | None,
              reference: Embeddings) -> Decision:
    spec = rounds.spec
    tried = {st.label(t, rounds.spec.quality.ladder()[r]): m.similarity for (t, r), m in st.measured.items()}
    probes = len(st.measured)
    if chosen is not None:
        t, m, data = chosen
        assert m.embedding is not None
        status: Status = "ok" if m.similarity >= spec.gate.threshold else "flagged"
        image, own = st.images[t], st.images[0]
        size = None if (image.width, image.height) == (own.width, own.height) else (image.width, image.height)
        return Decision(status, m.encoded.candidate, data, _first(spec, m), m.embedding, reference, probes, tried,
                        library=m.encoded.library, checks=m.checks, worst_crop=m.worst_crop, size=size)
    if spec.gate.on_fail == "source":  # nothing passed
        return Decision("source", None, None, 1.0, reference, reference, probes, tried)
    _, top = st.top(spec.quality.ladder())  # on_fail = "reject"
    return Decision("rejected", top.encoded.candidate, None, _first(spec, top), reference, reference, probes, tried,
                    checks=top.checks, worst_crop=top.worst_crop)


def _outcome(st: ImageSearch, chosen: tuple[int, Measured, bytes] | None, margins: Margins) -> Outcome:
    out = Outcome(reference=st.reference.copy(), margins=dict(margins))  # not views that keep their batch alive
    for track, s in zip(st.tracks, st.searches, strict=True):
        if s.best is not None:
            out.chosen[track] = s.best
        slope = s.slope()
        if slope is not None:
            out.slopes[track] = slope
    if chosen is not None and st.tracks[chosen[0]].side:
        out.side = st.tracks[chosen[0]].side
    return out
