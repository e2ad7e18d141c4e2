"""Measuring candidates: encode, look at them as each model does, embed, compare with the source.

A candidate is judged by every check of the spec (:meth:`preprocess.pipeline.spec.Gate.checks`): each
model of ``gate.models`` under each view of ``gate.views``. The ``whole`` view is the whole image as the
model sees it, against the source's; a region view (:class:`RegionView`: ``crops``, ``tiles``) cuts the
candidate at its own resolution into boxes, each against the same box of the uncompressed resized image,
and makes one score of them. Each round, the engine makes ONE model batch of every candidate's whole view
and every region of every region view (:meth:`~preprocess.pipeline.engines.base.Engine.looks`), and each
model embeds it in ONE call. The models of a spec share one model input (checked by the plan). On a staged
engine (``Engine.staged``: the CPU's, where a row costs the same alone as in a batch) each candidate is
decoded once and looked at check by check, the one most likely to fail first (:mod:`.stages`), up to its
first failing check: a failure usually costs one row instead of all of them (its ``similarity`` is then
the worst of what was measured, ``complete`` is False), a pass is measured under every check.

A candidate's gate score (:func:`gate_score`) puts every check on the scale of the first check's
threshold: it passes that threshold exactly when every check passes its own, and with one check it is
that check's similarity. So the quality search (:mod:`.search`) works on one curve whatever the views.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

import numpy as np
from numpy.typing import NDArray

from preprocess.core.timing import Laps
from preprocess.pipeline.batches import Embeddings, ModelBatch, similarity
from preprocess.pipeline.codecs import Candidate, Encoded
from preprocess.pipeline.engines.base import Box, Engine, Loaded, Opened, Prepared, crop_boxes, tile_boxes
from preprocess.pipeline.gate.stages import DEFICIT_FLOOR, WHOLE, Check, CheckOrder, margin
from preprocess.pipeline.spec import Spec, ViewName

Checks = dict[str, dict[ViewName, float]]  # model -> view -> measured similarity


class Embedder(Protocol):
    """What the gate needs of a feature extractor: a model batch -> L2-normalised [N, D]."""

    def embed(self, batch: ModelBatch) -> Embeddings: ...


@dataclass(frozen=True)
class Measure:
    """How a candidate is judged: encoded, decoded and viewed by ``engine``, embedded by ``embedder``
    (the primary model of ``gate.models``) and ``others`` (the rest, in order)."""

    engine: Engine
    embedder: Embedder
    others: tuple[Embedder, ...] = ()

    @property
    def embedders(self) -> tuple[Embedder, ...]:
        return (self.embedder, *self.others)


@dataclass
class Measured:
    """A candidate that was encoded and judged."""

    encoded: Encoded
    similarity: float  # the gate score (:func:`gate_score`): >= the first threshold when every check passes
    embedding: Embeddings | None  # the primary model's whole-view embedding [D] (None until stored, without it)
    checks: Checks = field(default_factory=dict)
    worst_crop: Box | None = None  # the crop with the lowest similarity of any model (crops view)
    # False for a candidate turned down at its first failing check (a staged engine): ``checks`` and
    # ``similarity`` then hold what was measured, whose worst is an upper bound of the full measure's
    complete: bool = True


def combine_tiles(sims: NDArray[np.float32], how: str) -> float:
    """One score from an image's per-tile similarities: ``min`` (the worst tile), ``p10`` (the 10th
    percentile, linear interpolation) or ``mean``."""
    if how == "min":
        return float(np.min(sims))
    if how == "p10":
        return float(np.percentile(sims, 10))
    if how == "mean":
        return float(np.mean(sims))
    raise ValueError(f"unknown tiles_combine {how!r}")


class ViewColumns(TypedDict):
    """What a row records of its checks (the ``ItemRow`` fields of the same names)."""

    similarity_whole: float
    similarity_crops: float
    similarity_tiles: float
    crop_box: str
    checks: str


def view_columns(checks: Checks, worst_crop: Box | None) -> ViewColumns:
    """A stored candidate's checks as row fields: each view's worst similarity over the models (NaN when
    not checked), the worst crop's box ``x0,y0,x1,y1``, and every check as JSON ``{model: {view: s}}``."""
    def worst(view: ViewName) -> float:
        values = [per_view[view] for per_view in checks.values() if view in per_view]
        return min(values) if values else float("nan")

    return ViewColumns(
        similarity_whole=worst("whole"), similarity_crops=worst("crops"), similarity_tiles=worst("tiles"),
        crop_box=",".join(map(str, worst_crop)) if worst_crop is not None else "",
        checks=json.dumps({m: {v: round(s, 5) for v, s in per_view.items()} for m, per_view in checks.items()},
                          separators=(",", ":")) if checks else "")


def carried[F: (float, NDArray[np.float64])](margin: F, passed: bool | NDArray[np.bool_], scale: float) -> F:
    """A margin (in decades of the deficit below a check's threshold, >= 0 for a pass) carried to the scale
    of threshold ``scale``: >= ``scale`` exactly when ``passed``. Also array-wise (tune's gauges). A
    threshold of 1 has no deficit to scale by: its floor stands in, so a failure still scores below it."""
    m = np.where(passed, np.maximum(margin, 0.0), np.minimum(margin, -1e-9))  # a pass at the log's floor stays one
    score = 1.0 - max(1.0 - scale, DEFICIT_FLOOR) * 10.0 ** (-m)
    out = np.where(passed, np.maximum(score, scale), score)
    return float(out) if np.ndim(out) == 0 else out  # type: ignore[return-value]


def gate_score(checks: Checks, thresholds: dict[ViewName, float], scale: float) -> float:
    """The candidate's one score on the scale of threshold ``scale``: the check with the smallest margin
    (in decades of the deficit 1 - similarity below its own threshold's) carried over to ``scale``.
    ``>= scale`` exactly when every check passes; one check whose threshold is ``scale`` scores its own
    similarity."""
    pairs = [(s, thresholds[v]) for per_view in checks.values() for v, s in per_view.items()]
    if len(pairs) == 1 and pairs[0][1] == scale:
        return pairs[0][0]
    worst = min(margin(s, t) for s, t in pairs)
    return carried(worst, all(s >= t for s, t in pairs), scale)


class RegionView:
    """A view of regions at the image's own resolution (``crops`` or ``tiles``): its boxes, and one score
    from their similarities (with the index of the worst box)."""

    def __init__(self, name: ViewName, spec: Spec, tile: tuple[int, int]) -> None:
        self.name, self.gate, self.tile = name, spec.gate, tile

    def boxes(self, width: int, height: int) -> list[Box]:
        if self.name == "crops":
            return crop_boxes(width, height, self.gate.crops.grids, self.gate.crops.centre)
        return tile_boxes(width, height, *self.tile)

    def score(self, sims: NDArray[np.float32]) -> tuple[float, int]:
        worst = int(np.argmin(sims))
        if self.name == "crops":
            return float(sims[worst]), worst
        return combine_tiles(sims, self.gate.tiles_combine), worst


def tile_embeddings(engine: Engine, embedder: Embedder, images: Sequence[Prepared | Encoded]) -> list[Embeddings]:
    """Per image, the embeddings of its tiles ``[tiles, D]`` (uncompressed for a Prepared, decoded for
    an encoded candidate)."""
    if not images:
        return []
    tiles = engine.tiles(images)
    return tiles.split(embedder.embed(tiles.batch))


def tile_similarities(engine: Engine, embedder: Embedder, encoded: Sequence[Encoded],
                      reference: Sequence[Embeddings]) -> list[NDArray[np.float32]]:
    """Per candidate, each tile's cosine similarity with the same tile of its reference (from
    :func:`tile_embeddings` of the uncompressed image)."""
    return [similarity(e, r) for e, r in zip(tile_embeddings(engine, embedder, encoded), reference, strict=True)]


@dataclass
class _Looking:
    """One candidate looked at check by check (:meth:`Rounds.score` on a staged engine)."""

    opened: Opened
    image: int  # its batch image
    boxes: list[Box]  # its region boxes (at its own size)
    todo: list[Check]  # every check, in the order looked at
    got: dict[Check, float] = field(default_factory=dict)  # the similarities measured so far
    whole: Embeddings | None = None  # the primary model's whole-view embedding, once looked at

    @property
    def next(self) -> Check:
        return self.todo[len(self.got)]

    @property
    def done(self) -> bool:
        return len(self.got) == len(self.todo)


class Rounds:
    """Measuring candidates for one batch of prepared images, round after round: the sources' whole-view
    embeddings per model (the primary's are every image's reference for the priors and the rows) and the
    uncompressed images' regions per model, then each round's candidates encoded, looked at and scored."""

    def __init__(self, measure: Measure, loaded: Loaded, spec: Spec, clock: Laps) -> None:
        self.engine, self.embedders, self.spec, self.clock = measure.engine, measure.embedders, spec, clock
        self.images = loaded.prepared
        self.sources = [e.embed(loaded.source_view) for e in self.embedders]  # per model [N, D]
        self.reference = self.sources[0]
        clock("infer")
        self.thresholds = dict(spec.gate.views.items())
        v = self.engine.view_spec
        self.views = [RegionView(name, spec, (v.width, v.height)) for name in self.thresholds if name != "whole"]
        self.whole = "whole" in self.thresholds
        # check by check on a staged engine, where every region is a check of its own (not tiles: one score of
        # many tiles is not decided by any one of them)
        self.staged = self.engine.staged and all(view.name == "crops" for view in self.views)
        self.order = CheckOrder()
        self.regions: list[list[Embeddings]] = [[] for _ in self.embedders]  # per model, per image [boxes, D]
        if self.views:  # the sources' crops and tiles (the stage "regions": it was named "tiles" for both)
            ref = self.engine.regions(self.images, self.boxes)
            for m, e in enumerate(self.embedders):
                self.regions[m] = ref.split(e.embed(ref.batch))
            clock("regions")

    def boxes(self, width: int, height: int) -> list[Box]:
        """Every region view's boxes of a ``width`` x ``height`` image, view after view."""
        return [b for view in self.views for b in view.boxes(width, height)]

    def encode(self, images: Sequence[Prepared], asks: Sequence[Candidate]) -> list[Encoded]:
        """Candidate ``asks[k]`` of ``images[k]`` (a batch image, or the same source at another size)."""
        encoded = self.engine.encode(images, asks)
        self.clock("encode")
        return encoded

    def score(self, encoded: Sequence[Encoded], idxs: Sequence[int], images: Sequence[Prepared], *,
              full: bool = False) -> list[Measured]:
        """Each candidate (of batch image ``idxs[k]``, made from ``images[k]``) under every check: one look,
        one model call per model; on a staged engine (unless ``full``) check by check, each candidate up
        to its first failing check (:mod:`.stages`)."""
        if self.staged and not full:
            return self._staged(encoded, idxs, images)
        look = self.engine.looks(encoded, self.boxes if self.views else None, whole=self.whole)
        self.clock("view")
        checks: list[Checks] = [{} for _ in encoded]
        worst: list[tuple[float, Box | None]] = [(2.0, None) for _ in encoded]
        firsts: Embeddings | None = None
        for m, embedder in enumerate(self.embedders):
            wholes, regions = look.split(embedder.embed(look.batch))
            name = self.spec.gate.models[m]
            if wholes is not None:
                firsts = wholes if m == 0 else firsts
                for k, s in enumerate(similarity(wholes, self.sources[m][list(idxs)])):
                    checks[k].setdefault(name, {})["whole"] = float(s)
            for k, i in enumerate(idxs if self.views else ()):
                worst[k] = self._regions(checks[k].setdefault(name, {}), regions[k], self.regions[m][i],
                                         images[k], worst[k])
        self.clock("infer")
        return [Measured(e, gate_score(c, self.thresholds, self.spec.gate.threshold),
                         None if firsts is None else firsts[k], c, worst[k][1])
                for k, (e, c) in enumerate(zip(encoded, checks, strict=True))]

    def _staged(self, encoded: Sequence[Encoded], idxs: Sequence[int], images: Sequence[Prepared]) -> list[Measured]:
        """:meth:`score` check by check: each stage looks at every open candidate's next check (the one most
        likely to fail, :class:`CheckOrder`), one model call per model, until each one failed a check or
        passed them all."""
        looks = []
        for o, i, im in zip(self.engine.open(encoded), idxs, images, strict=True):
            boxes = self.boxes(im.width, im.height) if self.views else []
            looks.append(_Looking(o, i, boxes, self.order.checks(i, len(self.embedders), len(boxes), whole=self.whole)))
        self.clock("view")
        live = looks
        while live:
            stage = [(look, look.next) for look in live]
            for m, embedder in enumerate(self.embedders):
                self._stage(m, embedder, [(look, c) for look, c in stage if c.model == m])
            live = [look for look, c in stage if not look.done and look.got[c] >= self._threshold(c)]
        for look in looks:
            self.order.learn(look.image, {c: margin(s, self._threshold(c)) for c, s in look.got.items()})
        return [self._measured(look) for look in looks]

    def _stage(self, m: int, embedder: Embedder, picks: Sequence[tuple[_Looking, Check]]) -> None:
        """One model's rows of a stage: each pick's check looked at, embedded in one call and compared with
        the source's same view."""
        if not picks:
            return
        batch = self.engine.look([(look.opened, None if c.box == WHOLE else look.boxes[c.box]) for look, c in picks])
        self.clock("view")
        emb = embedder.embed(batch)
        refs = np.stack([self.sources[m][look.image] if c.box == WHOLE else self.regions[m][look.image][c.box]
                         for look, c in picks])
        for row, ((look, c), s) in enumerate(zip(picks, similarity(emb, refs), strict=True)):
            look.got[c] = float(s)
            if c.box == WHOLE and m == 0:
                look.whole = emb[row]
        self.clock("infer")

    def _threshold(self, check: Check) -> float:
        return self.thresholds["whole" if check.box == WHOLE else "crops"]

    def _measured(self, look: _Looking) -> Measured:
        """A candidate's checks from its looks: per model its whole view and its worst crop so far."""
        checks: Checks = {}
        worst: tuple[float, Box | None] = (2.0, None)
        for c, s in sorted(look.got.items()):
            per_view = checks.setdefault(self.spec.gate.models[c.model], {})
            if c.box == WHOLE:
                per_view["whole"] = s
                continue
            per_view["crops"] = min(s, per_view.get("crops", 2.0))
            if s < worst[0]:
                worst = (s, look.boxes[c.box])
        return Measured(look.opened.encoded, gate_score(checks, self.thresholds, self.spec.gate.threshold),
                        look.whole, checks, worst[1], complete=len(look.got) == len(look.todo))

    def _regions(self, out: dict[ViewName, float], got: Embeddings, ref: Embeddings, image: Prepared,
                 worst: tuple[float, Box | None]) -> tuple[float, Box | None]:
        """Each region view's score of one candidate into ``out``; the worst crop so far, updated."""
        start = 0
        for view in self.views:
            boxes = view.boxes(image.width, image.height)
            sims = similarity(got[start:start + len(boxes)], ref[start:start + len(boxes)])
            start += len(boxes)
            out[view.name], at = view.score(sims)
            if view.name == "crops" and float(sims[at]) < worst[0]:
                worst = (float(sims[at]), boxes[at])
        return worst

    def complete(self, measured: Sequence[Measured], idxs: Sequence[int], images: Sequence[Prepared]) -> list[Measured]:
        """Candidates turned down at their first failing check, measured under every check (what a row
        records of a candidate stored although it failed: ``on_fail = "flag"``)."""
        todo = [k for k, m in enumerate(measured) if not m.complete]
        out = list(measured)
        if todo:
            full = self.score([measured[k].encoded for k in todo], [idxs[k] for k in todo],
                              [images[k] for k in todo], full=True)
            for k, m in zip(todo, full, strict=True):
                out[k] = m
        return out

    def embed_stored(self, measured: Sequence[Measured]) -> None:
        """The primary model's whole-view embedding of what is stored, in one batch, where no round made it."""
        todo = [m for m in measured if m.embedding is None]
        if todo:
            batch = self.engine.view([m.encoded for m in todo])
            self.clock("view")
            for m, e in zip(todo, self.embedders[0].embed(batch), strict=True):
                m.embedding = e
            self.clock("infer")


def judge(measure: Measure, loaded: Loaded, spec: Spec, encoded: Sequence[Encoded]) -> list[Measured]:
    """Every check of ``spec`` (each model under each view) of ``encoded[k]``, a candidate made from
    ``loaded.prepared[k]``: what the gate would measure of it, for a report (``preprocess tune``)."""
    rounds = Rounds(measure, loaded, spec, Laps(None))
    return rounds.score(encoded, range(len(encoded)), loaded.prepared, full=True)
