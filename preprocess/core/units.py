"""Units as people read them: byte counts in decimal units (``27.0 KB``), counts of things (``1 commit``,
``3 commits``), for every face."""

from __future__ import annotations

import math


def size(n: int) -> str:
    """``n`` bytes as ``"812 B"``, ``"27.0 KB"``, ``"3.4 MB"`` ... (powers of 1000, like file managers)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1000
    return f"{n} B"


def count(n: int, noun: str) -> str:
    """``n`` and ``noun`` as English reads them: ``"1 commit"``, ``"0 commits"``, ``"3 snapshots"`` (the plural
    by ``s``: the nouns the messages count take it)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def number(value: object) -> float | None:
    """A stored number (a similarity) as a float; None for none: NaN is a view the gate did not check."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None
