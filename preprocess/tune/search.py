"""Where tune measures: per (coding, size, image), only the rungs that decide.

The ladder is long (the default spec's is q5..q95 step 2: 46 rungs) and a recommendation needs, per
image, the lowest rung that meets a target. :class:`Crossings` finds that rung for every similarity
of a *band* (the asked target and the presets') with the gate's own search
(:class:`preprocess.pipeline.gate.Search`): the first probe where the earlier images most like this one
crossed, the next ones where log(1 - similarity) is predicted to cross (interpolated, or extrapolated
with the slope learned from earlier images), each threshold's search starting from every rung already
measured. Each band target then ends at a measured boundary (the rung below it failed), at a pass
within the gate's settle margin, or at the ladder's end: exactly where ``run`` would end with that
threshold. ``--every-quality`` measures every rung instead (:class:`EveryRung`: full curves).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from preprocess.pipeline.gate import DEFICIT_SLOPE, DIP, SETTLE, Prior, Search


class Plan(Protocol):
    """One (coding, size, image)'s measurements to make, one rung at a time."""

    def next_rung(self, prior: Prior, reference: npt.NDArray[np.float32]) -> int | None: ...
    def record(self, rung: int, similarity: float) -> None: ...


@dataclass
class EveryRung:
    """Every rung of the ladder, lowest first."""

    rungs: int
    done: int = 0

    def next_rung(self, prior: Prior, reference: npt.NDArray[np.float32]) -> int | None:
        return self.done if self.done < self.rungs else None

    def record(self, rung: int, similarity: float) -> None:
        self.done = rung + 1


@dataclass
class Crossings:
    """The gate's search for each threshold of ``band`` in turn (the first is the asked target), sharing
    every rung measured."""

    ladder: list[int]
    band: list[float]
    tried: dict[int, float] = field(default_factory=dict)  # quality -> similarity (the leading gauge's)
    current: int = 0

    def search(self, threshold: float) -> Search:
        """The gate's search state for ``threshold`` given every rung measured so far: the open interval
        between the highest failure below the lowest pass and that pass."""
        measured = [(r, self.tried[q]) for r, q in enumerate(self.ladder) if q in self.tried]
        best = min((r for r, s in measured if s >= threshold), default=None)
        end = len(self.ladder) if best is None else best
        lo = max((r + 1 for r, s in measured if s < threshold and r < end), default=0)
        return Search(lo=lo, hi=end - 1, best=best, tried=dict(self.tried))

    def next_rung(self, prior: Prior, reference: npt.NDArray[np.float32]) -> int | None:
        while self.current < len(self.band):
            threshold = self.band[self.current]
            guess = prior.first(reference) if not self.tried else None
            rung = self.search(threshold).next_probe(guess, self.ladder, threshold, slope=prior.slope,
                                                     settle=SETTLE, dip=DIP)
            if rung is not None:
                return rung
            self.current += 1
        return None

    def record(self, rung: int, similarity: float) -> None:
        self.tried[self.ladder[rung]] = similarity

    def chosen(self) -> int | None:
        """The rung the asked target's search ended at (None: none passed)."""
        return self.search(self.band[0]).best

    def slope(self) -> float | None:
        return self.search(self.band[0]).slope()


@dataclass
class Learned:
    """What earlier images teach the next searches of one (coding, size), as :class:`GateStats` does for
    ``run``: where the asked target was crossed (by source embedding) and how fast the deficit falls."""

    chosen: deque[int] = field(default_factory=lambda: deque(maxlen=512))
    slopes: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    seen: deque[tuple[npt.NDArray[np.float32], int]] = field(default_factory=lambda: deque(maxlen=512))

    def prior(self) -> Prior:
        return Prior(guess=int(np.median(self.chosen)) if self.chosen else None,
                     slope=float(np.median(self.slopes)) if self.slopes else DEFICIT_SLOPE,
                     seen=np.stack([e for e, _ in self.seen]) if self.seen else None,
                     rungs=np.array([r for _, r in self.seen]) if self.seen else None)

    def learn(self, plans: Sequence[Plan], references: Sequence[npt.NDArray[np.float32]]) -> None:
        for plan, ref in zip(plans, references, strict=True):
            if not isinstance(plan, Crossings):
                continue
            rung, slope = plan.chosen(), plan.slope()
            if rung is not None:
                self.chosen.append(rung)
                self.seen.append((ref, rung))
            if slope is not None:
                self.slopes.append(slope)


def band_order(target: float, band: Sequence[float]) -> list[float]:
    """The thresholds to search: the asked target first, then the others nearest first."""
    rest = sorted({b for b in band if b != target}, key=lambda b: (abs(b - target), b))
    return [target, *rest]
