"""The feature gate: per image, the lowest quality whose stored bytes still look like the source.

Reference = the source as the model sees it; candidate = the encoded bytes decoded the same
way; score = cosine similarity of their embeddings. Adaptive mode runs a batched search over
the spec's quality ladder: every round, all images still searching encode at their own probe
quality, their candidates are viewed and embedded in ONE model call, and each image narrows
its interval. Similarity is not monotone in quality, so the stored candidate is always one
that was measured to pass, with the similarity that was measured.

With ``gate.view = "tiles"`` the score is not the whole image's: the candidate is cut into
model-sized tiles at its own resolution (:meth:`Engine.tiles`), each tile is compared with the same
tile of the uncompressed resized image, and the tiles' similarities combine into one score
(``gate.tiles_combine``: the worst tile, the 10th percentile, or the mean). The embedding stored
with the row is still the whole image's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from preprocess.engines.base import Engine, Loaded, Prepared
from preprocess.extractor.session import Extractor, cosine
from preprocess.spec import Gate, Quality

Status = Literal["ok", "flagged", "source", "passthrough", "rejected"]


@dataclass
class Decision:
    """What the gate chose for one prepared image."""

    status: Status
    quality: int  # 0 when the source bytes are kept
    similarity: float
    jpeg: bytes | None  # None for "source" and "rejected"
    embedding: np.ndarray  # of what is stored
    reference: np.ndarray  # of the source, as the model sees it
    probes: int
    tried: dict[int, float] = field(default_factory=dict)  # quality -> measured similarity


# How fast the feature deficit (1 - similarity) falls with JPEG quality, in decades per quality
# point: log10(1 - s) drops by ~0.1 per 5 quality points on the bundled camera, opencv and skimage
# photos with MobileNetV2 (bench/NOTES.md). Only a prior for where to probe next: every decision
# is still measured.
DEFICIT_SLOPE = 0.02


def _log_deficit(similarity: float) -> float:
    return math.log10(max(1.0 - similarity, 1e-6))


@dataclass
class _Search:
    """One image's search over ladder rungs ``0..top``: the open interval ``[lo, hi]`` between the
    highest rung measured to fail below it and the lowest rung measured to pass above it."""

    lo: int
    hi: int
    best: int | None = None
    best_bytes: bytes | None = None
    best_emb: np.ndarray | None = None
    tried: dict[int, float] = field(default_factory=dict)  # quality -> measured similarity
    top: tuple[bytes, np.ndarray | None] | None = None  # the candidate at the ladder's top, once measured

    def next_probe(self, guess: int | None, ladder: Sequence[int], threshold: float) -> int | None:
        """The next rung to measure, or None when the search is over.

        First the guess (else the middle). Then the rung where the similarity is predicted to
        cross the threshold: interpolated in log(1 - similarity) between the two measured rungs
        around the interval, or extrapolated from the one measured side with
        :data:`DEFICIT_SLOPE`. A prediction outside the interval is clamped into it, so every
        probe still shrinks it: at worst this is a linear search, usually it is 1-2 probes.
        """
        lo, hi = self.lo, self.hi
        if lo > hi:
            return None
        if not self.tried:
            return guess if guess is not None and lo <= guess <= hi else (lo + hi) // 2
        goal = _log_deficit(threshold)
        failed = ladder[lo - 1] if lo > 0 else None  # measured below the threshold
        passed = ladder[hi + 1] if hi + 1 < len(ladder) and ladder[hi + 1] in self.tried else None
        if failed is not None and passed is not None:
            a, b = _log_deficit(self.tried[failed]), _log_deficit(self.tried[passed])
            if not a > goal >= b:  # only when 1 - threshold is below the log's floor
                return (lo + hi) // 2
            target = failed + (a - goal) / (a - b) * (passed - failed)
        elif failed is not None:
            target = failed + (_log_deficit(self.tried[failed]) - goal) / DEFICIT_SLOPE
        elif passed is not None:
            target = passed - (goal - _log_deficit(self.tried[passed])) / DEFICIT_SLOPE
        else:
            return (lo + hi) // 2
        rung = next((r for r in range(lo, hi + 1) if ladder[r] >= target - 1e-9), hi)
        return min(max(rung, lo), hi)

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


@dataclass
class GateStats:
    """Carries a first guess across batches: the median chosen ladder index so far."""

    chosen: list[int] = field(default_factory=list)

    def guess(self) -> int | None:
        return int(np.median(self.chosen[-512:])) if self.chosen else None

    def record(self, decisions: Sequence[Decision], quality: Quality) -> None:
        """Add the rungs that passed (in order) to what later guesses start from."""
        ladder = quality.ladder()
        self.chosen.extend(ladder.index(d.quality) for d in decisions if d.status == "ok")

    def seed(self, qualities: Sequence[int], quality: Quality) -> None:
        """Start from qualities chosen earlier with the same spec (e.g. by the branch's last job)."""
        ladder = quality.ladder()
        self.chosen.extend(ladder.index(q) for q in qualities if q in ladder)


def _timed(timings: dict[str, float] | None, stage: str, t0: float) -> float:
    now = time.perf_counter()
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + now - t0
    return now


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


def tile_embeddings(engine: Engine, extractor: Extractor, images: Sequence[Prepared | bytes]) -> list[np.ndarray]:
    """Per image, the embeddings of its tiles ``[tiles, D]`` (uncompressed for a Prepared, decoded for bytes)."""
    if not images:
        return []
    tiles = engine.tiles(images)
    return np.split(extractor.embed(tiles.batch), np.cumsum(tiles.counts)[:-1])


def tile_similarities(engine: Engine, extractor: Extractor, encoded: Sequence[bytes],
                      reference: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per candidate, each tile's cosine similarity with the same tile of its reference (from
    :func:`tile_embeddings` of the uncompressed image)."""
    return [np.einsum("nd,nd->n", e, r).astype(np.float32)
            for e, r in zip(tile_embeddings(engine, extractor, encoded), reference, strict=True)]


def decide(engine: Engine, extractor: Extractor, loaded: Loaded, quality: Quality, gate: Gate,
           guess: int | None = None, timings: dict[str, float] | None = None) -> list[Decision]:
    """Run the search for every prepared image of ``loaded``; returns decisions in the same order.

    ``guess`` (a ladder index, e.g. :meth:`GateStats.guess`) is every image's first probe. Each
    image's search depends only on its own pixels and the guess, never on the other images of the
    call, so how a batch is cut into calls cannot change what is stored.

    ``timings`` (if given) accumulates seconds per stage: ``encode``, ``view`` (candidate decode +
    model view) and ``infer`` (embedding, reference included).
    """
    images = loaded.prepared
    if not images:
        return []
    ladder = quality.ladder()
    top = len(ladder) - 1
    t0 = time.perf_counter()
    ref = extractor.embed(loaded.source_view)
    t0 = _timed(timings, "infer", t0)
    tiles_ref = tile_embeddings(engine, extractor, images) if gate.view == "tiles" else None
    _timed(timings, "tiles", t0)
    states = [_Search(lo=0, hi=top) for _ in images]

    def probe(idxs: Sequence[int], rungs: Sequence[int]) -> None:
        qs = [ladder[r] for r in rungs]
        t = time.perf_counter()
        blobs = engine.encode([images[i] for i in idxs], qs)
        t = _timed(timings, "encode", t)
        embs: list[np.ndarray | None]
        if tiles_ref is None:
            batch = engine.view(blobs)
            t = _timed(timings, "view", t)
            emb = extractor.embed(batch)
            _timed(timings, "infer", t)
            sims = [float(x) for x in cosine(emb, ref[list(idxs)])]
            embs = list(emb)
        else:  # the whole-image embedding of what is stored is computed once, for the chosen candidate
            per_tile = tile_similarities(engine, extractor, blobs, [tiles_ref[i] for i in idxs])
            _timed(timings, "tiles", t)
            sims = [combine_tiles(ts, gate.tiles_combine) for ts in per_tile]
            embs = [None] * len(idxs)
        for i, r, blob, e, s in zip(idxs, rungs, blobs, embs, sims, strict=True):
            st = states[i]
            if r == top:
                st.top = (blob, e)
            if st.update(r, float(s), gate.threshold, ladder) and st.best == r:
                st.best_bytes, st.best_emb = blob, e

    while True:
        todo = [(i, r) for i, st in enumerate(states)
                if (r := st.next_probe(guess, ladder, gate.threshold)) is not None]
        if not todo:
            break
        probe([i for i, _ in todo], [r for _, r in todo])
    # Images with no passing rung: make sure the top rung itself was measured.
    missing = [i for i, st in enumerate(states) if st.best is None and st.top is None]
    if missing:
        probe(missing, [top] * len(missing))
    if tiles_ref is not None:
        _embed_chosen(engine, extractor, states, timings)

    out: list[Decision] = []
    for i, st in enumerate(states):
        probes = len(st.tried)
        if st.best is not None:
            assert st.best_bytes is not None and st.best_emb is not None
            q = ladder[st.best]
            out.append(Decision("ok", q, st.tried[q], st.best_bytes, st.best_emb, ref[i], probes, st.tried))
            continue
        assert st.top is not None and st.top[1] is not None
        top_q = ladder[top]
        if gate.on_fail == "flag":
            out.append(Decision("flagged", top_q, st.tried[top_q], st.top[0], st.top[1], ref[i], probes, st.tried))
        elif gate.on_fail == "source":
            out.append(Decision("source", 0, 1.0, None, ref[i], ref[i], probes, st.tried))
        else:
            out.append(Decision("rejected", top_q, st.tried[top_q], None, st.top[1], ref[i], probes, st.tried))
    return out


def _embed_chosen(engine: Engine, extractor: Extractor, states: Sequence[_Search],
                  timings: dict[str, float] | None) -> None:
    """Tiles view: the whole-image embedding of each chosen candidate (what the row stores), in one batch."""
    chosen = [(st, st.best_bytes if st.best is not None else st.top[0] if st.top else None) for st in states]
    todo = [(st, blob) for st, blob in chosen if blob is not None]
    if not todo:
        return
    t = time.perf_counter()
    batch = engine.view([blob for _, blob in todo])
    t = _timed(timings, "view", t)
    emb = extractor.embed(batch)
    _timed(timings, "infer", t)
    for (st, blob), e in zip(todo, emb, strict=True):
        if st.best is not None:
            st.best_emb = e
        else:
            st.top = (blob, e)
