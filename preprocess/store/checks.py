"""What the gate checked of a stored image, read from its row: every (model, view) similarity with the
threshold of the spec that stored it, and the worst crop's box. The one reading that `show --item` and the
web UI's item page both print, so that a check reads the same number on every face."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from preprocess.rows.provenance import SpecInfo
from preprocess.store.cells import Record

CHECKS_ROUNDING = 0.5e-5 + 1e-7  # a row's ``checks`` JSON keeps 5 digits (of a float32: off by ~1e-7 more)


@dataclass(frozen=True)
class Check:
    """One line of the item page's checks: a model under a view, its similarity and threshold."""

    view: str
    model: str
    similarity: float
    threshold: float | None

    @property
    def passed(self) -> bool | None:
        return None if self.threshold is None else self.similarity >= self.threshold


def checks_of(item: Record, metadata: Mapping[str, object]) -> list[Check]:
    """Every check the gate measured of the stored image (the row's ``checks``), with the thresholds of
    the commit's recorded spec; [] for a row made before views (or that keeps its source's bytes)."""
    try:
        measured = json.loads(str(item.get("checks") or "{}"))
    except ValueError:
        return []
    gate = SpecInfo.of(_mapping(metadata.get("spec"))).gate
    thresholds = gate.views or ({gate.view or "whole": gate.threshold} if gate.threshold is not None else {})
    return [Check(view, model, _unrounded(item, view, float(sim)), thresholds.get(view))
            for model, views in measured.items() if isinstance(views, dict)
            for view, sim in views.items() if isinstance(sim, int | float)]


def _unrounded(item: Record, view: str, recorded: float) -> float:
    """A check's similarity as the row's own column for its view holds it (``similarity_whole``: the worst
    model's, unrounded) when ``recorded`` (``checks`` keeps 5 digits) is that value rounded; else as recorded.
    Shown to 4 digits, 0.99835 (0.9983515 rounded) read 0.9983 beside the column's 0.9984."""
    column = item.get(f"similarity_{view}")
    if isinstance(column, int | float) and math.isfinite(column) and abs(float(column) - recorded) <= CHECKS_ROUNDING:
        return float(column)
    return recorded


def _mapping(value: object) -> Mapping[str, object] | None:
    return value if isinstance(value, Mapping) else None


def worst_crop(item: Record) -> tuple[int, int, int, int] | None:
    """The worst crop's box (``x0, y0, x1, y1`` in the stored image), when the row has one."""
    parts = str(item.get("crop_box") or "").split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        return None
    x0, y0, x1, y1 = (int(p) for p in parts)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
