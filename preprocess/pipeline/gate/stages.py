"""Which check of a candidate to look at next, when an engine looks check by check (``Engine.staged``).

A candidate passes only if every check passes (each model under each view; a crop is one check), so a
candidate can be turned down by the first failing check, without the model rows of the others. On a CPU a
model row costs the same in a call of one as in a call of 32, so the gate looks at one check per candidate
per stage, the one most likely to fail first: per batch image, its checks sorted by their margin on its
latest candidate that measured them (in decades of the deficit ``1 - similarity`` above the threshold's,
as :func:`~preprocess.pipeline.gate.measure.gate_score` puts them). A candidate's worst crop seldom moves
from one quality to the next (on the bench's frames the same crop was the worst on 80% of successive
probes), so a failing probe usually costs one row. A pass still looks at every check: what is stored is
measured under all of them.

Pure bookkeeping (no model, no engine): ``tests/pipeline/test_gate_stages.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Check:
    """One look at a candidate: model ``model`` (its index in ``gate.models``) at region ``box`` (its index
    among the region boxes of the candidate, crops view) or at the whole view (``box = WHOLE``)."""

    model: int
    box: int


WHOLE = -1
Margins = dict[Check, float]  # a candidate's checks -> their margins (:func:`margin`)


DEFICIT_FLOOR = 1e-6  # the smallest deficit 1 - similarity told apart (float32 cosines near 1)


def log_deficit(similarity: float) -> float:
    """log10 of the deficit 1 - similarity (floored): the scale every margin, prediction and score is on."""
    return math.log10(max(1.0 - similarity, DEFICIT_FLOOR))


def margin(similarity: float, threshold: float) -> float:
    """How far a similarity is above its threshold, in decades of the deficit (negative: it fails)."""
    return log_deficit(threshold) - log_deficit(similarity)


@dataclass
class CheckOrder:
    """Per batch image, the margins its checks last measured; :meth:`checks` puts the smallest first."""

    margins: dict[int, Margins] = field(default_factory=dict)  # batch image -> its checks' latest margins

    def checks(self, image: int, models: int, boxes: int, *, whole: bool) -> list[Check]:
        """Every check of a candidate of batch image ``image``, the one most likely to fail first. A check
        never measured counts as at the threshold (margin 0): before every measured pass, after every
        measured failure. Ties go model by model, the regions before the whole view (on the bench's frames
        crops turned down 108 of 130 failing probes, the whole view 22)."""
        known = self.margins.get(image, {})
        every = [Check(m, b) for m in range(models) for b in [*range(boxes), *([WHOLE] if whole else [])]]
        rank = {c: k for k, c in enumerate(every)}
        return sorted(every, key=lambda c: (known.get(c, 0.0), rank[c]))

    def learn(self, image: int, measured: Margins) -> None:
        """A candidate's measured margins, which replace the image's earlier ones check by check."""
        self.margins.setdefault(image, {}).update(measured)
