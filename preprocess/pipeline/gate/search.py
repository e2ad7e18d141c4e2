"""One variant's quality search over the ladder: which rung to measure next, given what was measured.

Pure (no model, no engine): ``tests/pipeline/test_gate_search.py`` runs it over similarity curves of
every shape. Similarity is not monotone in quality, so the search only narrows an interval between a
measured failure and a measured pass; what is stored is always a candidate measured to pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from preprocess.pipeline.gate.stages import log_deficit

# How fast the feature deficit (1 - similarity) falls with quality, in decades per quality point,
# before a job has measured its own: log10(1 - s) drops by ~0.1 per 5 libjpeg quality points on the
# bundled photos with MobileNetV2 (bench/NOTES.md). Each variant learns its own slope as images are
# searched (:class:`~preprocess.pipeline.gate.priors.GateStats`). Only a prior for where to probe next:
# every decision is measured.
DEFICIT_SLOPE = 0.02
# A passing candidate this close above the threshold ends its variant's search without measuring
# the rung below it: near the crossing a quality step moves the similarity by about this much, so
# the rung below would almost surely fail (simulated on the measured curves of 44 photos: against 0.0005,
# 0.1% more bytes, 3% fewer probes for AVIF; 0.0015 costs 1% bytes; bench/NOTES.md).
SETTLE = 0.001
# Similarity is not monotone in quality: on frames of a fixed camera jpegli passes q25, fails q27 and
# q37-39, passes from q41. So a pass is confirmed against the failures below it where the curve dips: a
# failure whose deficit (1 - similarity) is within DIP decades of the threshold's is noise around the
# threshold, not proof that every rung below fails, and the rung below it is measured too, down to the
# first deeper failure (or a pass, where the search goes on below it). Chosen on the tuning sets' curves
# (bench/NOTES.md).
DIP = 0.05
# Where a failing candidate costs less than a passing one (a staged engine, ``Engine.staged``: turned down at
# its first failing check, usually one model row of the six a pass needs), every predicted probe leans this
# many rungs below the prediction: the first guess and each interpolated one. On the bench's frames: 1.7
# passes and 1.4 failures an image at 0, 1.4 and 1.7 at 1, 5% fewer model rows and 0.6% fewer bytes
# (bench/NOTES.md).
LEAN = 1


@dataclass
class Search:
    """One variant's search over ladder rungs ``0..top``: the open interval ``[lo, hi]`` between the
    highest rung measured to fail below it and the lowest rung measured to pass above it."""

    lo: int
    hi: int
    best: int | None = None
    tried: dict[int, float] = field(default_factory=dict)  # quality -> measured similarity
    pruned: set[int] = field(default_factory=set)  # rungs left unmeasured: they cannot be stored (:meth:`prune`)
    floor: int = field(default=-1, repr=False)  # the lowest rung searched (the first lo)

    def __post_init__(self) -> None:
        if self.floor < 0:
            self.floor = self.lo

    def next_probe(self, guess: int | None, ladder: Sequence[int], threshold: float, *,  # noqa: PLR0913 (rules, by keyword)
                   slope: float = DEFICIT_SLOPE, settle: float = 0.0, dip: float = 0.0, lean: int = 0) -> int | None:
        """The next rung to measure, or None when the search is over.

        First the guess (else the middle). Then the rung where the similarity is predicted to
        cross the threshold: interpolated in log(1 - similarity) between the two measured rungs
        around the interval, or extrapolated from the one measured side with ``slope``. A
        prediction outside the interval is clamped into it, so every probe still shrinks it: at
        worst this is a linear search, usually it is 1-2 probes. Both the guess and the prediction go
        ``lean`` rungs lower (where a failure is cheaper to measure than a pass). The search also ends
        when the lowest pass is within ``settle`` above the threshold. Once the lowest pass sits on a
        failure, with ``dip`` > 0 the pass is confirmed against the failures below it
        (:meth:`_confirm`).
        """
        lo, hi = self.lo, self.hi
        if self.best is not None and self.tried[ladder[self.best]] < threshold + settle:
            return None
        if lo > hi:
            return self._confirm(ladder, threshold, dip) if dip > 0 and self.best is not None else None
        if not self.tried:
            return max(guess - lean, lo) if guess is not None and lo <= guess <= hi else (lo + hi) // 2
        target = self._predict(ladder, threshold, slope)
        if target is None:
            return (lo + hi) // 2
        rung = next((r for r in range(lo, hi + 1) if ladder[r] >= target - 1e-9), hi) - lean
        return min(max(rung, lo), hi)

    def _predict(self, ladder: Sequence[int], threshold: float, slope: float) -> float | None:
        """The quality where the similarity is predicted to reach the threshold (None: no basis)."""
        goal = log_deficit(threshold)
        lo, hi = self.lo, self.hi
        failed = ladder[lo - 1] if lo > 0 and ladder[lo - 1] in self.tried else None
        passed = ladder[hi + 1] if hi + 1 < len(ladder) and ladder[hi + 1] in self.tried else None
        if failed is not None and passed is not None:
            a, b = log_deficit(self.tried[failed]), log_deficit(self.tried[passed])
            if not a > goal >= b:  # only when 1 - threshold is below the log's floor
                return None
            return failed + (a - goal) / (a - b) * (passed - failed)
        if failed is not None:
            return failed + (log_deficit(self.tried[failed]) - goal) / self._rising(failed, slope)
        if passed is not None:
            return passed - (goal - log_deficit(self.tried[passed])) / slope
        return None

    def _rising(self, failed: int, slope: float) -> float:
        """The slope to extrapolate upwards from the highest failure: the prior, or flatter when the last
        two failures (4+ points apart) show the curve flattening (dark, smooth images: far from the
        guess, the deficit falls slowly, and the prior would creep up one short step at a time)."""
        below = sorted(q for q in self.tried if q < failed)
        if not below or failed - below[-1] < 4:
            return slope
        a = below[-1]
        secant = (log_deficit(self.tried[a]) - log_deficit(self.tried[failed])) / (failed - a)
        return min(slope, max(secant, slope / 4))

    def _confirm(self, ladder: Sequence[int], threshold: float, dip: float) -> int | None:
        """Below the lowest pass, walk down the measured failures while each is shallow (its deficit
        within ``dip`` decades of the threshold's): the first rung not measured yet is the next probe.
        None at a deeper failure, at a rung :meth:`prune` left out (it has the pass's bytes or more: on a flat
        image every rung has, and the walk asked for that rung for ever), or at the bottom of the ladder."""
        assert self.best is not None
        goal = log_deficit(threshold)
        for rung in range(self.best - 1, -1, -1):
            if rung in self.pruned:
                return None
            sim = self.tried.get(ladder[rung])
            if sim is None:
                return rung
            if log_deficit(sim) - goal >= dip:
                return None
        return None

    def prune(self, rung: int) -> None:
        """Leave ``rung`` and every rung above it out: it cannot be stored (its bytes are at least those of a
        pass), and neither can a higher quality."""
        self.pruned.add(rung)
        self.hi = min(self.hi, rung - 1)

    def update(self, rung: int, similarity: float, threshold: float, ladder: Sequence[int]) -> bool:
        """Record a measurement; True when it passed. The interval is what the measurements leave: below
        the lowest pass, above the highest failure under it (a pass found below a failure while
        confirming reopens the interval under that pass)."""
        self.tried[ladder[rung]] = similarity
        passed = similarity >= threshold
        if passed and (self.best is None or rung < self.best):
            self.best = rung
        if self.best is not None:
            self.hi = min([self.best - 1, *(r - 1 for r in self.pruned)])  # pruned rungs stay out
        below = [r for r in range(len(ladder)) if (self.best is None or r < self.best)
                 and ladder[r] in self.tried and self.tried[ladder[r]] < threshold]
        self.lo = max(below) + 1 if below else min(self.lo, self.floor)
        return passed

    def slope(self) -> float | None:
        """This search's deficit slope: the least-squares fit of log(1 - similarity) against quality
        over every rung it measured (None with fewer than two rungs 4+ points apart, or no fall).
        The fit over the whole range, not the last step, is what extrapolating from a first guess
        needs: near the crossing the curve is steeper and noisier."""
        qs = sorted(self.tried)
        if len(qs) < 2 or qs[-1] - qs[0] < 4:
            return None
        x = np.asarray(qs, dtype=np.float64)
        y = np.asarray([log_deficit(self.tried[q]) for q in qs])
        fall = -float(np.polyfit(x, y, 1)[0])
        return fall if fall > 0 else None
