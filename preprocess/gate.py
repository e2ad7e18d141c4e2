"""The feature gate: per image, the lowest quality whose stored bytes still look like the source.

Reference = the source as the model sees it; candidate = the encoded bytes decoded the same
way; score = cosine similarity of their embeddings. Adaptive mode runs a batched search over
the spec's quality ladder: every round, all images still searching encode at their own probe
quality, their candidates are viewed and embedded in ONE model call, and each image narrows
its interval. Similarity is not monotone in quality, so the stored candidate is always one
that was measured to pass, with the similarity that was measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from preprocess.engines.base import Engine, Loaded
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


@dataclass
class _Search:
    lo: int
    hi: int
    best: int | None = None
    best_bytes: bytes | None = None
    best_emb: np.ndarray | None = None
    tried: dict[int, float] = field(default_factory=dict)
    top: tuple[bytes, np.ndarray] | None = None  # the candidate at the ladder's top, once measured

    def next_probe(self, guess: int | None) -> int | None:
        if self.lo > self.hi:
            return None
        if guess is not None and not self.tried and self.lo <= guess <= self.hi:
            return guess
        return (self.lo + self.hi) // 2


@dataclass
class GateStats:
    """Carries a first guess across batches: the median chosen ladder index so far."""

    chosen: list[int] = field(default_factory=list)

    def guess(self) -> int | None:
        return int(np.median(self.chosen[-512:])) if self.chosen else None


def _timed(timings: dict[str, float] | None, stage: str, t0: float) -> float:
    now = time.perf_counter()
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + now - t0
    return now


def decide(engine: Engine, extractor: Extractor, loaded: Loaded, quality: Quality, gate: Gate,
           stats: GateStats | None = None, timings: dict[str, float] | None = None) -> list[Decision]:
    """Run the search for every prepared image of ``loaded``; returns decisions in the same order.

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
    _timed(timings, "infer", t0)
    states = [_Search(lo=0, hi=top) for _ in images]
    guess = stats.guess() if stats else None

    def probe(idxs: Sequence[int], rungs: Sequence[int]) -> None:
        qs = [ladder[r] for r in rungs]
        t = time.perf_counter()
        blobs = engine.encode([images[i] for i in idxs], qs)
        t = _timed(timings, "encode", t)
        batch = engine.view(blobs)
        t = _timed(timings, "view", t)
        emb = extractor.embed(batch)
        _timed(timings, "infer", t)
        sims = cosine(emb, ref[list(idxs)])
        for i, r, blob, e, s in zip(idxs, rungs, blobs, emb, sims, strict=True):
            st = states[i]
            st.tried[ladder[r]] = float(s)
            if r == top:
                st.top = (blob, e)
            if s >= gate.threshold:
                if st.best is None or r < st.best:
                    st.best, st.best_bytes, st.best_emb = r, blob, e
                st.hi = r - 1
            else:
                st.lo = r + 1

    while True:
        todo = [(i, r) for i, st in enumerate(states) if (r := st.next_probe(guess)) is not None]
        if not todo:
            break
        probe([i for i, _ in todo], [r for _, r in todo])
    # Images with no passing rung: make sure the top rung itself was measured.
    missing = [i for i, st in enumerate(states) if st.best is None and st.top is None]
    if missing:
        probe(missing, [top] * len(missing))

    out: list[Decision] = []
    for i, st in enumerate(states):
        probes = len(st.tried)
        if st.best is not None:
            assert st.best_bytes is not None and st.best_emb is not None
            q = ladder[st.best]
            out.append(Decision("ok", q, st.tried[q], st.best_bytes, st.best_emb, ref[i], probes, st.tried))
            if stats is not None:
                stats.chosen.append(st.best)
            continue
        assert st.top is not None
        top_q = ladder[top]
        if gate.on_fail == "flag":
            out.append(Decision("flagged", top_q, st.tried[top_q], st.top[0], st.top[1], ref[i], probes, st.tried))
        elif gate.on_fail == "source":
            out.append(Decision("source", 0, 1.0, None, ref[i], ref[i], probes, st.tried))
        else:
            out.append(Decision("rejected", top_q, st.tried[top_q], None, st.top[1], ref[i], probes, st.tried))
    return out
