"""Measuring candidates: encode, look at them as the model does, embed, compare with the source.

A :class:`View` is one way of looking: the whole image (:class:`WholeView`, one model-view row per
image) or its tiles at their own resolution (:class:`TileView`, several rows per image whose
similarities combine into one score). Each round a view makes ONE model batch of every candidate's rows
and ONE model call (:class:`Embedder`); a new way of looking (crops, several views of one image) is
another :class:`View` over the same engine and embedder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from preprocess.core.timing import Laps
from preprocess.pipeline.batches import Embeddings, ModelBatch, similarity
from preprocess.pipeline.codecs import Candidate, Encoded
from preprocess.pipeline.engines.base import Engine, Loaded, Prepared
from preprocess.pipeline.spec import Spec


class Embedder(Protocol):
    """What the gate needs of a feature extractor: a model batch -> L2-normalised [N, D]."""

    def embed(self, batch: ModelBatch) -> Embeddings: ...


@dataclass(frozen=True)
class Measure:
    """How a candidate is judged: encoded, decoded and viewed by ``engine``, embedded by ``embedder``."""

    engine: Engine
    embedder: Embedder


@dataclass
class Measured:
    """A candidate that was encoded and judged."""

    encoded: Encoded
    similarity: float
    embedding: Embeddings | None  # whole-image embedding [D] (None in the tiles view until it is stored)


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


class View(Protocol):
    """One way of scoring candidates against their sources."""

    def score(self, encoded: Sequence[Encoded], idxs: Sequence[int]) -> list[Measured]:
        """Each candidate measured against the source at its index (of the batch's prepared images)."""
        ...


class WholeView:
    """The whole image as the model sees it (squashed to its input size) against the source's: the
    candidate's embedding is the one stored with the row."""

    def __init__(self, measure: Measure, reference: Embeddings, clock: Laps) -> None:
        self.engine, self.embedder, self.reference, self.clock = measure.engine, measure.embedder, reference, clock

    def score(self, encoded: Sequence[Encoded], idxs: Sequence[int]) -> list[Measured]:
        batch = self.engine.view(encoded)
        self.clock("view")
        emb = self.embedder.embed(batch)
        self.clock("infer")
        sims = similarity(emb, self.reference[list(idxs)])
        return [Measured(e, float(s), row) for e, s, row in zip(encoded, sims, emb, strict=True)]


class TileView:
    """Model-sized tiles at the image's own resolution, each against the same tile of the uncompressed
    resized image; the tiles' similarities combine (``gate.tiles_combine``) into one score."""

    def __init__(self, measure: Measure, images: Sequence[Prepared], combine: str, clock: Laps) -> None:
        self.engine, self.embedder, self.combine, self.clock = measure.engine, measure.embedder, combine, clock
        self.reference = tile_embeddings(self.engine, self.embedder, images)

    def score(self, encoded: Sequence[Encoded], idxs: Sequence[int]) -> list[Measured]:
        per_tile = tile_similarities(self.engine, self.embedder, encoded, [self.reference[i] for i in idxs])
        self.clock("tiles")
        return [Measured(e, combine_tiles(ts, self.combine), None) for e, ts in zip(encoded, per_tile, strict=True)]


class Rounds:
    """Measuring candidates for one batch of prepared images, round after round: the sources'
    whole-image embeddings (every view's reference for the priors and the rows), then each round's
    candidates encoded and scored by the spec's view (``gate.view``)."""

    def __init__(self, measure: Measure, loaded: Loaded, spec: Spec, clock: Laps) -> None:
        self.engine, self.embedder, self.spec, self.clock = measure.engine, measure.embedder, spec, clock
        self.images = loaded.prepared
        self.reference = self.embedder.embed(loaded.source_view)
        clock("infer")
        self.view: View
        if spec.gate.view == "tiles":
            self.view = TileView(measure, self.images, spec.gate.tiles_combine, clock)
        else:
            self.view = WholeView(measure, self.reference, clock)
        clock("tiles")

    def measure(self, idxs: Sequence[int], asks: Sequence[Candidate]) -> list[Measured]:
        """Candidate ``asks[k]`` of image ``idxs[k]``, each encoded and scored."""
        encoded = self.engine.encode([self.images[i] for i in idxs], asks)
        self.clock("encode")
        return self.view.score(encoded, idxs)

    def embed_stored(self, measured: Sequence[Measured]) -> None:
        """The whole-image embedding of what is stored, in one batch, where the view did not make it."""
        todo = [m for m in measured if m.embedding is None]
        if todo:
            batch = self.engine.view([m.encoded for m in todo])
            self.clock("view")
            for m, e in zip(todo, self.embedder.embed(batch), strict=True):
                m.embedding = e
            self.clock("infer")
